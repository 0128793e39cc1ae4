"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o600, *, sync: bool = False) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``.

    By default no fsync: most of what we write this way is derived or re-created by the next warm
    (activation), and an fsync costs milliseconds on a journaled disk. A crash leaves the old file
    or the new one, which the start-up sweep and the next warm handle. ``sync``: the file's bytes,
    then its name, are on the disk when this returns (a publish's lock file and marker: durable.py).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns():x}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away from os.open's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else None.

    For files a project directory names (``.env``, ``-r`` files): a cloned repository may ship them
    as a FIFO or a symlink to ``/dev/zero``, which a plain read would block on, or read forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = b""
        while len(data) < st.st_size and (block := os.read(fd, st.st_size - len(data))):
            data += block  # never past the size fstat() gave: /proc files claim 0 and read for minutes
        return data
    except OSError:
        return None
    finally:
        os.close(fd)
