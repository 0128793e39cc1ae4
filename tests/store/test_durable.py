"""Durable publish: what a power loss needs, observed as the system calls a real publish makes.

A test cannot pull the power. It can watch, with strace, that the build's files are synced before
the lock file, the marker, the rename and the registry write, in that order (durable.py).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from provisiond.store import durable
from tests.conftest import REPO

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

PUBLISH = """
import sys
from pathlib import Path
from provisiond.config.settings import Paths
from provisiond.store.store import Store
from tests.store.test_store import LOCK, fake_build
root = Path(sys.argv[1])
paths = Paths(home=root / "store", socket=root / "s.sock", state=root / "state")
with Store.open(paths) as store:
    build_dir = fake_build(store)
    if sys.argv[2] == "in-place":
        build_dir.rename(paths.prefix(LOCK.env_key))
        print("PUBLISH", flush=True)
        store.publish_in_place(LOCK, paths.prefix(LOCK.env_key))
    else:
        print("PUBLISH", flush=True)
        store.publish(LOCK, build_dir)
"""


def traced(tmp_path: Path, code: str, *args: str) -> list[str]:
    """The syscalls (fd paths shown) that ``code`` makes after it prints PUBLISH."""
    out = tmp_path / "strace.out"
    subprocess.run(["strace", "-f", "-y", "-qq", "-s", "256", "-o", str(out),
                    "-e", "trace=syncfs,fsync,fdatasync,rename,renameat,renameat2,pwrite64,write",
                    sys.executable, "-c", code, *args], cwd=REPO, check=True, capture_output=True, timeout=60)
    lines = out.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if '"PUBLISH"' in line)
    return lines[start:]


def first(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(lines))


@needs_strace
def test_publish_syncs_files_then_lock_then_marker_then_rename_then_row(tmp_path: Path) -> None:
    calls = traced(tmp_path, PUBLISH, str(tmp_path), "rename")
    synced = first(calls, r"^\d+\s+syncfs\(\d+</[^>]*/envs/\.building/[^>/]+>\)")
    lock_synced = first(calls, r"fsync\(\d+</[^>]*/locks/\.[0-9a-f]{64}\.json\.")
    lock_named = first(calls, r"fsync\(\d+</[^>]*/locks>\)")
    marker_synced = first(calls, r"fsync\(\d+</[^>]*/envs/\.building/[^>/]+/\.\.provisiond-complete\.json\.")
    marker_named = first(calls, r"fsync\(\d+</[^>]*/envs/\.building/[^>/]+>\)")
    renamed = first(calls, r"rename[a-z0-9]*\(.*envs/\.building/[^\"/]+\", .*envs/[0-9a-f]{16}\"")
    rename_synced = first(calls, r"fsync\(\d+</[^>]*/envs>\)")
    row = first(calls, r"pwrite64\(\d+</[^>]*/state\.db-wal>")
    assert synced < lock_synced < lock_named < marker_synced < marker_named < renamed < rename_synced < row


@needs_strace
def test_publish_in_place_syncs_the_prefix_before_the_marker(tmp_path: Path) -> None:
    calls = traced(tmp_path, PUBLISH, str(tmp_path), "in-place")
    synced = first(calls, r"^\d+\s+syncfs\(\d+</[^>]*/envs/[0-9a-f]{16}>\)")
    marker = first(calls, r"rename[a-z0-9]*\(.*\.provisiond-complete\.json\.[^\"]*\.tmp\"")
    marker_named = first(calls, r"fsync\(\d+</[^>]*/envs/[0-9a-f]{16}>\)")
    row = first(calls, r"pwrite64\(\d+</[^>]*/state\.db-wal>")
    assert synced < marker < marker_named < row


FSYNC_TREE = """
import sys
from pathlib import Path
from provisiond.store import durable
print("PUBLISH", flush=True)
print(durable.fsync_tree(Path(sys.argv[1])), flush=True)
"""


@needs_strace
def test_the_fsync_fallback_syncs_every_file_and_directory(tmp_path: Path) -> None:
    """Where syncfs(2) does not exist, every file and directory of the tree is fsynced."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib" / "deep").mkdir(parents=True)
    for file in ("bin/a", "lib/b.so", "lib/deep/c.txt", "top"):
        (tree / file).write_text(file)
    (tree / "bin" / "link").symlink_to("a")
    calls = traced(tmp_path, FSYNC_TREE, str(tree))
    synced = {m.group(1) for line in calls if (m := re.search(r"fsync\(\d+<([^>]+)>\) = 0", line))}
    expected = {str(tree / p) for p in ("", "bin", "lib", "lib/deep", "bin/a", "lib/b.so", "lib/deep/c.txt", "top")}
    assert synced == {p.rstrip("/") for p in expected}


def test_sync_tree_uses_syncfs_on_linux(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    how, seconds = durable.sync_tree(tmp_path)
    assert how == ("syncfs" if sys.platform.startswith("linux") else "fsync") and seconds >= 0
    with pytest.raises(NotADirectoryError):
        durable.syncfs(tmp_path / "f")


async def test_a_cancelled_caller_waits_for_the_thread_to_finish() -> None:
    """A thread cannot be stopped: cleanup after a cancel must not run while it still renames files."""
    release, finished = threading.Event(), []

    def work() -> str:
        release.wait(30)
        finished.append(True)
        return "placed"

    task = asyncio.create_task(durable.finish_in_thread(work))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(20):  # a plain to_thread() would be cancelled by now
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True]
    assert await durable.finish_in_thread(work) == "placed"
