"""The store's one package cache under both engines: shared, understood by gc, never re-downloaded.

Real engines (rattler in process, the real micromamba binary) on one store, installing from a real
channel served over HTTP with a token, so every package download is a GET we can count.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.daemon.builder import Builder
from provisiond.domain.lock import Lock
from provisiond.domain.spec import parse_spec
from provisiond.engines._micromamba_output import is_cached
from provisiond.engines.base import Engine
from provisiond.store import gc, pkgcache
from provisiond.store.store import Store
from provisiond.testing.micromamba import MISSING, find_test_micromamba
from tests.conftest import serve_directory
from tests.engines.test_engines_agree import engine_on

pytestmark = pytest.mark.skipif(find_test_micromamba() is None, reason=MISSING)
TOKEN = "tk-0123456789abcdef"


@pytest.fixture
def served(channel: Path) -> Iterator[tuple[str, list[str]]]:
    """The demo channel over HTTP behind a token: (channel URL with the token, package GETs)."""
    gets: list[str] = []
    with serve_directory(channel, lambda p: gets.append(p) if p.endswith((".conda", ".tar.bz2")) else None,
                         token=TOKEN) as url:
        yield f"{url}t/{TOKEN}/", gets


async def solve(engine: Engine, channel_url: str) -> Lock:
    return await engine.solve(parse_spec(f"channels:\n  - {channel_url}\ndependencies:\n  - hello\n  - greet-data\n"))


async def install(engine: Engine, lock: Lock, prefix: Path) -> list[str]:
    lines: list[str] = []
    build = prefix.parent / f"build-{prefix.name}"  # micromamba: scratch files only (it builds in place)
    build.mkdir(exist_ok=True)
    await engine.install(lock, build if engine.builds_in_place else prefix, prefix, lines.append)
    return lines


def hello(prefix: Path) -> str:
    return subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True, timeout=30).stdout


# micromamba+micromamba: micromamba links (its own cache layout); micromamba: the default, rattler's installer links
# (rattler's layout). Each pair: the second install must take what the first one cached, across the two layouts.
MM_LINKS = "micromamba+micromamba"


@pytest.mark.parametrize(("first", "second"), [("rattler", MM_LINKS), (MM_LINKS, "rattler"),
                                               ("micromamba", MM_LINKS), (MM_LINKS, "micromamba")])
async def test_a_package_cached_by_one_engine_is_not_downloaded_by_the_other(
        first: str, second: str, served: tuple[str, list[str]], tmp_path: Path) -> None:
    url, gets = served
    home = tmp_path / "home"
    engines = {name: engine_on(home, name) for name in (first, second)}
    lock = await solve(engines[first], url)
    assert lock.packages == (await solve(engines[second], url)).packages
    await install(engines[first], lock, tmp_path / "one")
    assert len(gets) == len(lock.packages) == 3  # each archive fetched once
    lines = await install(engines[second], lock, tmp_path / "two")
    assert len(gets) == 3, f"the {second} engine downloaded again: {gets[3:]}"
    assert any("packages from" in line and "cache layout" in line for line in lines), lines
    assert hello(tmp_path / "two").startswith("Hello 2.0")
    pkgs = home / "pkgs"
    for package in lock.packages:  # the same bytes under both layouts: hardlinks, not copies
        ours, theirs = pkgcache.rattler_entry(pkgs, package), pkgcache.micromamba_entry(pkgs, package)
        assert theirs is not None and (ours / "info" / "index.json").stat().st_ino == \
            (theirs / "info" / "index.json").stat().st_ino
    if second == MM_LINKS:
        assert any("--offline" in line for line in lines)  # nothing left to fetch: micromamba is told so


async def test_micromamba_http_layout_is_cached_and_conda_meta_has_clean_urls(
        served: tuple[str, list[str]], tmp_path: Path) -> None:
    url, gets = served
    engine = engine_on(tmp_path / "home", MM_LINKS)
    lock = await solve(engine, url)
    pkgs = tmp_path / "home" / "pkgs"
    assert not any(is_cached(pkgs, p) for p in lock.packages)
    await install(engine, lock, tmp_path / "env")
    port = url.split(":")[2].split("/")[0]
    for package in lock.packages:  # pkgs/http/<host>_<port>/<path>/<subdir>/<stem>, without the token
        entry = pkgcache.micromamba_entry(pkgs, package)
        assert entry is not None and entry.parent == pkgs / "http" / f"127.0.0.1_{port}" / package.subdir
        assert is_cached(pkgs, package)
    lines = await install(engine, lock, tmp_path / "again")
    assert len(gets) == 3 and any("--offline" in line for line in lines)
    for record in (tmp_path / "env" / "conda-meta").glob("*.json"):
        text = record.read_text()
        assert "*****" not in text and TOKEN not in text  # micromamba wrote `/t/*****/`: cleaned
    leaked = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []  # micromamba wrote it into its cache records and urls.txt: scrubbed
    urls = sorted(p.url for p in lock.packages)
    assert sorted(json.loads(r.read_text())["url"] for r in (tmp_path / "env" / "conda-meta").glob("*.json")) == urls


async def test_gc_sees_packages_of_both_layouts_and_never_the_bookkeeping(
        served: tuple[str, list[str]], tmp_path: Path) -> None:
    url, gets = served
    home = tmp_path / "home"
    engines = {name: engine_on(home, name) for name in ("rattler", MM_LINKS)}
    lock = await solve(engines[MM_LINKS], url)
    await install(engines[MM_LINKS], lock, tmp_path / "m")
    await install(engines["rattler"], lock, tmp_path / "r")
    pkgs = home / "pkgs"
    assert (pkgs / "cache").is_dir() and (pkgs / "urls.txt").is_file()
    entries = pkgcache.entries(pkgs)
    assert [e.dist for e in entries] == sorted(p.dist for p in lock.packages)
    for entry in entries:  # rattler's dir (+ .lock), micromamba's dir and archive: one package
        assert {p.parent == pkgs for p in entry.paths} == {True, False}
    sizes = gc.measure(engines["rattler"].settings.paths,  # type: ignore[attr-defined]
                       [("pkg", str(p)) for e in entries for p in e.paths])
    planned = gc._over_budget(gc.cache_entries(pkgs), 0, {}, set(), sizes)
    single = sum(gc._tree_bytes(pkgcache.rattler_entry(pkgs, p), only_unshared=False) for p in lock.packages)
    archives = sum(p.size or 0 for p in lock.packages)
    assert sum(p["bytes"] for p in planned) == 2 * single + archives  # each layout's paths counted
    with Store.open(engines["rattler"].settings.paths) as store:  # type: ignore[attr-defined]
        report = await gc.collect(store, dry_run=False, older_than_days=0, cache_budget_bytes=0,
                                  in_use=lambda *_a, **_k: "kept", pinned=set)
    assert sorted(p["package"] for p in report["packages"]) == sorted(p.dist for p in lock.packages)
    assert pkgcache.entries(pkgs) == [] and (pkgs / "cache").is_dir() and (pkgs / "urls.txt").is_file()
    shutil.rmtree(tmp_path / "m")
    await asyncio.sleep(0)
    await install(engines[MM_LINKS], lock, tmp_path / "m")  # fetched again, and it works
    assert len(gets) == 6 and hello(tmp_path / "m").startswith("Hello 2.0")
    assert os.path.isdir(tmp_path / "m" / "conda-meta")


async def test_micromamba_solve_linked_by_rattler_is_one_micromamba_process(
        served: tuple[str, list[str]], tmp_path: Path) -> None:
    """The default (micromamba_install = rattler): micromamba solves, rattler's installer links in
    process, at the final path through the store's usual build dir and rename; credentials from the
    solve are used, and written nowhere (conda-meta holds clean URLs, as under micromamba's own link)."""
    url, gets = served
    engine = engine_on(tmp_path / "home", "micromamba")
    assert engine.settings.micromamba_install == "rattler"  # type: ignore[attr-defined]
    assert engine.builds_in_place is False
    lock = await solve(engine, url)
    settings = engine.settings  # type: ignore[attr-defined]
    with Store.open(settings.paths) as store:
        prefix = await Builder(store, engine, settings).ensure(lock)
    assert hello(prefix).startswith("Hello 2.0") and len(gets) == 3
    log = "\n".join(p.read_text() for p in (tmp_path / "home" / "logs").glob("*.log"))
    assert "linking with rattler's installer" in log and "micromamba create --json" not in log
    assert not list((tmp_path / "home" / "pkgs").glob("http"))  # micromamba fetched no package
    records = [json.loads(r.read_text()) for r in (prefix / "conda-meta").glob("*.json")]
    assert sorted(r["url"] for r in records) == sorted(p.url for p in lock.packages)
    assert all("*****" not in r["url"] and TOKEN not in r["url"] for r in records)
    leaked = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaked == []  # not in conda-meta, the package cache, nor micromamba's repodata cache
