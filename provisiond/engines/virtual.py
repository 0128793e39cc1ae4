"""Virtual packages (``__glibc``, ``__cuda``, …): detected once, detected again when the system changed.

rattler caches its detection for the life of the process (a ``OnceCell`` per package), so a
daemon that runs for weeks would go on solving for the CUDA driver it saw at start-up. A cheap
fingerprint of what the answer depends on (the NVIDIA driver's version file, the C library the
process maps) is compared on every ask (two ``stat``/``read`` calls); when it changed, the
packages are detected again in a fresh process. ``CONDA_OVERRIDE_*`` variables are honoured, as
micromamba and conda do; they come from the daemon's environment, which only a restart changes.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

DETECT_TIMEOUT = 60.0
# The loaded NVIDIA kernel module's version: changes with a driver update (what __cuda follows).
_DRIVER_FILES = (Path("/sys/module/nvidia/version"), Path("/proc/driver/nvidia/version"))
_DETECT = ("import json, rattler; print(json.dumps(sorted(str(v.into_generic()) for v in "
           "rattler.VirtualPackage.detect(rattler.VirtualPackageOverrides.from_env()))))")

Fingerprint = tuple[object, ...]


def detect() -> list[str]:
    """This process's virtual packages as ``name=version=build`` strings, overrides applied."""
    import rattler

    detected = rattler.VirtualPackage.detect(rattler.VirtualPackageOverrides.from_env())
    return sorted(str(v.into_generic()) for v in detected)


def detect_in_subprocess(environ: Mapping[str, str]) -> list[str]:
    """``detect()`` in a new interpreter, which has no cached answer."""
    done = subprocess.run([sys.executable, "-c", _DETECT], env=dict(environ), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=DETECT_TIMEOUT, check=True)
    value = json.loads(done.stdout.strip().splitlines()[-1])
    if not isinstance(value, list):
        raise ValueError("not a list")
    return [str(v) for v in value]


def fingerprint() -> Fingerprint:
    """What the detected packages depend on and can change under a running daemon."""
    parts: list[object] = []
    for path in _DRIVER_FILES:
        try:
            parts.append(path.read_text(errors="replace").strip()[:200])
        except OSError:
            parts.append(None)
    libc = _mapped_libc()
    try:
        st = Path(libc).stat() if libc else None
        parts.append((libc, st.st_ino, st.st_mtime_ns) if st else None)
    except OSError:
        parts.append((libc, None))
    return tuple(parts)


@functools.cache  # which file is mapped does not change; what is at that path may
def _mapped_libc() -> str | None:
    """The path of the C library this process runs with (a glibc upgrade replaces that file)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "/libc.so" in path or "/libc-" in path:
                    return path
    except OSError:
        pass
    return None


class VirtualPackages:
    """The current virtual packages; ``current()`` detects again when the fingerprint changed."""

    def __init__(self, first: list[str], redetect: Callable[[], list[str]],
                 probe: Callable[[], Fingerprint] = fingerprint) -> None:
        self._probe = probe
        self._redetect = redetect
        self._fingerprint = probe()
        self._value = sorted(first)

    def current(self) -> list[str]:
        now = self._probe()
        if now != self._fingerprint:
            self._fingerprint = now
            try:
                value = sorted(self._redetect())
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                log.warning("the system changed but detecting virtual packages again failed (%s); "
                            "keeping %s", exc, ", ".join(self._value))
            else:
                if value != self._value:
                    log.info("virtual packages changed: %s -> %s", ", ".join(self._value), ", ".join(value))
                self._value = value
        return list(self._value)


# What a machine of another platform is assumed to have when we lock for it (pixi's defaults:
# the oldest systems current conda-forge builds support). This machine's platform uses detection.
_ARCHSPEC = {"64": "x86_64", "aarch64": "aarch64", "arm64": "arm64", "ppc64le": "ppc64le", "32": "x86",
             "s390x": "s390x", "armv7l": "armv7l"}


def for_platform(platform: str, current_platform: str, current: list[str]) -> list[str]:
    """The virtual packages to solve ``platform`` with: ``current`` (detected) for this machine's,
    else the defaults of a typical machine of that platform (``CONDA_OVERRIDE_*`` still apply)."""
    import os

    if platform == current_platform:
        return list(current)
    system, _, arch = platform.partition("-")
    found: dict[str, str] = {}
    if system == "linux":
        found = {"__linux": "4.18=0", "__glibc": os.environ.get("CONDA_OVERRIDE_GLIBC", "2.28") + "=0",
                 "__unix": "0=0"}
    elif system == "osx":
        found = {"__osx": os.environ.get("CONDA_OVERRIDE_OSX", "13.0" if arch == "arm64" else "10.15") + "=0",
                 "__unix": "0=0"}
    elif system == "win":
        found = {"__win": "0=0"}
    if arch in _ARCHSPEC and system in ("linux", "osx", "win"):
        found["__archspec"] = f"1={_ARCHSPEC[arch]}"
    if os.environ.get("CONDA_OVERRIDE_CUDA"):
        found["__cuda"] = os.environ["CONDA_OVERRIDE_CUDA"] + "=0"
    return sorted(f"{k}={v}" for k, v in found.items())
