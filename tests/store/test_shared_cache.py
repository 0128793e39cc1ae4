"""Seeding our package cache from conda's, micromamba's and pixi's: only complete, identical entries; theirs untouched."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from provisiond.domain.lock import Package
from provisiond.store import conda_envs, shared_cache

SHA = hashlib.sha256(b"pkg").hexdigest()


def package(sha256: str | None = SHA, md5: str | None = None, url: str = "https://x.example/c/linux-64/a-1-0.conda") -> Package:
    return Package(name="a", version="1", build="0", build_number=0, subdir="linux-64", channel="https://x.example/c/",
                   url=url, file_name="a-1-0.conda", sha256=sha256, md5=md5)


def entry(cache: Path, record: dict | None, *, complete: bool = True) -> Path:
    """An extracted package as conda leaves it: files, info/index.json, info/repodata_record.json last."""
    d = cache / "a-1-0"
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "a").write_text("#!/bin/sh\necho a\n")
    (d / "lib").mkdir()
    (d / "lib" / "liba.so.1").write_text("elf")
    (d / "lib" / "liba.so").symlink_to("liba.so.1")
    (d / "info").mkdir()
    if complete:
        (d / "info" / "index.json").write_text(json.dumps({"name": "a", "version": "1", "build": "0"}))
    if record is not None:
        (d / "info" / "repodata_record.json").write_text(json.dumps(record))
    return d


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p): (p.lstat().st_ino, p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_seed_links_a_conda_entry_and_leaves_it_untouched(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "conda-pkgs", tmp_path / "ours"
    entry(theirs, {"sha256": SHA, "md5": "m"})
    before = snapshot(theirs)
    seeded = shared_cache.seed(ours, [str(tmp_path / "absent"), str(theirs)], [package()])
    assert seeded.linked == {"a-1-0": str(theirs)} and seeded.missing == []
    assert (ours / "a-1-0" / "bin" / "a").stat().st_ino == (theirs / "a-1-0" / "bin" / "a").stat().st_ino
    assert (ours / "a-1-0" / "lib" / "liba.so").readlink() == Path("liba.so.1")
    # rattler's entry lock: revision 1, then the sha256 it checks against the record
    assert (ours / "a-1-0.lock").read_bytes() == struct.pack(">Q", 1) + bytes.fromhex(SHA)
    assert snapshot(theirs) == before
    assert not list(ours.glob(".seed-*"))
    # Already ours: nothing to do.
    assert shared_cache.seed(ours, [str(theirs)], [package()]).linked == {}


def test_seed_ignores_other_builds_and_incomplete_entries(tmp_path: Path) -> None:
    theirs, ours = tmp_path / "conda-pkgs", tmp_path / "ours"
    entry(theirs, {"sha256": hashlib.sha256(b"other").hexdigest()})
    seeded = shared_cache.seed(ours, [str(theirs)], [package()], offline=True)
    assert seeded.linked == {} and seeded.missing == ["a-1-0"] and not (ours / "a-1-0").exists()
    assert shared_cache.seed(ours, [str(theirs)], [package()]).missing == []  # online: the engine fetches it
    half, _ = tmp_path / "half", entry(tmp_path / "half", {"sha256": SHA}, complete=False)
    assert shared_cache.seed(ours, [str(half)], [package()]).linked == {}
    # md5 when the lock has no sha256 is not enough for rattler's lock file: left to the engine
    md5_only = tmp_path / "md5"
    entry(md5_only, {"md5": "abc"})
    assert shared_cache.seed(ours, [str(md5_only)], [package(sha256=None, md5="abc")]).linked == {}
    # a local channel's package is never "missing" (offline builds copy it from the channel)
    assert shared_cache.seed(ours, [], [package(url="file:///c/linux-64/a-1-0.conda")], offline=True).missing == []


def test_seed_reads_a_rattler_cache(tmp_path: Path) -> None:
    pixi, ours = tmp_path / "rattler-cache", tmp_path / "ours"
    entry(pixi, None)
    (pixi / "a-1-0.lock").write_bytes(struct.pack(">Q", 3) + bytes.fromhex(SHA))
    assert shared_cache.seed(ours, [str(pixi)], [package()]).linked == {"a-1-0": str(pixi)}


def test_environments_txt_keeps_other_lines() -> None:
    text = "# comment\n/opt/conda/envs/x\n/store/envs/old\n"
    assert conda_envs.merged(text, "/store/envs", ["/store/envs/new"]) == \
        "# comment\n/opt/conda/envs/x\n/store/envs/new\n"
    assert conda_envs.merged("", "/store/envs/", []) == ""
    assert conda_envs.merged("/store/envs-other/y\n", "/store/envs", []) == "/store/envs-other/y\n"
