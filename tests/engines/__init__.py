"""Engine tests: micromamba replays of recorded outputs, and real engines on a local channel."""
