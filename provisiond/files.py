"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``.

    No fsync: what we write this way is derived or re-created by the next warm (locks, markers,
    activation), and a build writes a few dozen such files (an fsync costs milliseconds each on a
    journaled disk). A crash leaves the old file or the new one, which the start-up sweep and the
    next warm handle.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns():x}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)  # the umask may have taken bits away from os.open's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
