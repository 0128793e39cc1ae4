"""Both engines for real on the local test channel: the same suite, the same Locks, the same env_key.

The rattler engine always runs. The micromamba engine runs when ``provisiond.testing.micromamba``
finds one (PATH, ``PROVISIOND_MICROMAMBA_PATH``, ``../shared/tools/micromamba``) and skips with the
reason otherwise. Its ``HOME`` is a temp dir, since ``create`` registers every prefix in
``~/.conda/environments.txt``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.config.settings import Settings, load_settings
from provisiond.daemon.builder import Builder
from provisiond.domain.errors import SolveError
from provisiond.domain.spec import EnvSpec, parse_spec
from provisiond.engines.base import Engine
from provisiond.engines.choose import engine_for
from provisiond.store.store import MARKER, Store
from provisiond.testing.micromamba import MISSING, find_test_micromamba

MICROMAMBA = find_test_micromamba()

# RattlerEngine() still calls the deprecated rattler.Platform (py-rattler 0.28 warns); only that is let through.


def make_settings(tmp_path: Path, variant: str) -> Settings:
    """``variant``: an engine name, or ``micromamba+micromamba`` (``micromamba_install = micromamba``)."""
    engine, _, linker = variant.partition("+")
    values = {"home": str(tmp_path / f"home-{engine}"), "socket": "/tmp/pvd-unused.sock", "engine": engine}
    if engine == "micromamba":
        values["micromamba_path"] = str(MICROMAMBA)
    if linker:
        values["micromamba_install"] = linker
    return load_settings(values, environ={}, config_file=tmp_path / "none.toml")


def make_engine(tmp_path: Path, variant: str) -> tuple[Settings, Engine]:
    if variant.startswith("micromamba") and MICROMAMBA is None:
        pytest.skip(MISSING)
    settings = make_settings(tmp_path, variant)
    home = tmp_path / "user-home"
    home.mkdir(exist_ok=True)
    engine = engine_for(settings, {**os.environ, "HOME": str(home)})
    assert engine.name == variant.partition("+")[0]
    return settings, engine


# micromamba: the default (micromamba solves, rattler's installer links); micromamba+micromamba: micromamba links too
@pytest.fixture(params=["rattler", "micromamba", "micromamba+micromamba"])
def real(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Engine, Store]]:
    settings, engine = make_engine(tmp_path, request.param)
    with Store.open(settings.paths) as store:
        yield settings, engine, store


def spec_on(channel: Path, *deps: str) -> EnvSpec:
    text = "\n".join(["channels:", f"  - {channel.as_uri()}", "dependencies:", *[f"  - {d}" for d in deps]])
    return parse_spec(text + "\n")


async def test_real_solve_and_install_a_working_env(real: tuple[Settings, Engine, Store], channel: Path) -> None:
    settings, engine, store = real
    lock = await engine.solve(spec_on(channel, "hello", "greet-data"))
    assert [(p.name, p.version) for p in lock.packages] == [("greet-data", "1.0"), ("hello", "2.0"),
                                                            ("libgreet", "1.0")]
    assert all(p.sha256 and p.channel == channel.as_uri() + "/" for p in lock.packages)
    prefix = await Builder(store, engine, settings).ensure(lock)
    assert prefix == settings.paths.prefix(lock.env_key) and (prefix / MARKER).is_file()
    run = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True, timeout=30)
    assert run.stdout.strip() == f"Hello 2.0 from {prefix}"
    assert f"{prefix}/lib".encode() + b"\0" in (prefix / "lib" / "hello.bin").read_bytes()
    assert list(settings.paths.building.iterdir()) == []
    records = {r.name: json.loads(r.read_text()) for r in (prefix / "conda-meta").glob("*.json")}
    assert sorted(r["url"] for r in records.values()) == sorted(p.url for p in lock.packages)  # either link path
    sha = {p.url: p.sha256 for p in lock.packages}
    assert all(r["sha256"] == sha[r["url"]] and r["files"] for r in records.values())


async def test_real_unsolvable_spec_is_a_solve_error(real: tuple[Settings, Engine, Store], channel: Path) -> None:
    _settings, engine, _store = real
    with pytest.raises(SolveError, match="cannot be solved") as err:
        await engine.solve(spec_on(channel, "hello>=5"))
    assert "hello" in err.value.message


async def test_real_engines_agree_on_records_and_env_key(tmp_path: Path, channel: Path) -> None:
    _, rattler_engine = make_engine(tmp_path, "rattler")
    _, micromamba_engine = make_engine(tmp_path, "micromamba")
    for deps in (("hello",), ("hello=1.0", "tool-a", "greet-data")):
        ours, theirs = await micromamba_engine.solve(spec_on(channel, *deps)), await rattler_engine.solve(
            spec_on(channel, *deps))
        assert ours.packages == theirs.packages, deps
        assert ours.env_key == theirs.env_key and ours.channels == theirs.channels
