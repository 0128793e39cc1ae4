"""Getting a published env onto the disk before anything says it is ready (a power loss, not just kill -9).

A build writes thousands of files (hardlinks into ``pkgs/``, directories, a few rewritten files).
``fsync`` of each would cost a journal commit per file on ext4; one ``syncfs(2)`` of the store's
filesystem writes back every dirty inode and data page of that filesystem, directories included,
in one batch, and returns once they are on the disk (Linux >= 5.8 also reports writeback errors).
It may also flush other writers' data on the same filesystem: that is its price, measured in
benchmarks/bench_core.py. Where ``syncfs`` is missing (not Linux) each file and directory is
fsynced instead. The small files written after it (lock file, marker) and the renames that make
them visible are fsynced one by one (``fsync_dir``, ``files.write_atomic(sync=True)``).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def _libc_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _libc_syncfs()


def syncfs(path: Path) -> bool:
    """``syncfs(2)`` of the filesystem holding ``path``; False where the call does not exist."""
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)
    return True


def fsync_tree(root: Path) -> int:
    """fsync every regular file and directory under ``root`` (``root`` too); returns how many."""
    count = 0
    for top, _dirs, files in os.walk(root):  # symlinked dirs are not followed
        for name in files:
            path = os.path.join(top, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:  # a symlink (its target is synced where it lives) or a special file
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            count += 1
        fsync_dir(Path(top))
        count += 1
    return count


def fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` (a new name, a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path) -> tuple[str, float]:
    """Make every file and directory under ``root`` durable: (how: "syncfs" or "fsync", seconds)."""
    started = time.perf_counter()
    how = "syncfs" if syncfs(root) else "fsync"
    if how == "fsync":
        fsync_tree(root)
    return how, time.perf_counter() - started


async def finish_in_thread(func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` in a thread, awaited to its end even when the caller is cancelled.

    A thread cannot be stopped: a cancelled build that went on cleaning up while the thread still
    renamed its files could publish half a prefix. The cancellation is re-raised once it is done.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
