"""Engine tests: micromamba replays of recorded outputs, real engines on a local channel, pip (uv)."""
