"""Shutdown during a rattler install: the install stops, and only then is its build dir removed.

rattler links files in threads that outlive a cancelled ``rattler.install``; the engine waits for
them to end, so the builder's cleanup removes everything and nothing reappears after it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.config.settings import Settings, load_settings
from provisiond.daemon.provisioner import Provisioner
from provisiond.domain.errors import ShuttingDownError
from provisiond.domain.spec import parse_spec
from provisiond.engines.rattler import RattlerEngine
from provisiond.store.store import Store
from provisiond.testing.channel import Pkg, build_channel


def settings_in(tmp_path: Path, name: str) -> Settings:
    return load_settings({"home": str(tmp_path / name), "socket": "/tmp/pvd-unused.sock", "engine": "rattler"},
                         environ={}, config_file=tmp_path / "none.toml")


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Packages with thousands of small files: linking them takes a while."""
    pkgs = [Pkg(f"bulk-{i}", "1.0", files={f"share/bulk-{i}/f{j:05d}": f"{i}-{j}\n" for j in range(4000)})
            for i in range(4)]
    return build_channel(tmp_path_factory.mktemp("bulk"), pkgs)


def count(path: Path) -> int:
    return sum(len(files) + len(dirs) for _root, dirs, files in os.walk(path))


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    yield settings_in(tmp_path, "home")


async def test_close_during_linking_cancels_and_cleans_the_build_dir(settings: Settings, many_files: Path) -> None:
    engine = RattlerEngine(settings)
    spec = parse_spec(f"channels:\n  - {many_files.as_uri()}\ndependencies:\n"
                      + "".join(f"  - bulk-{i}\n" for i in range(4)))
    with Store.open(settings.paths) as store:
        provisioner = Provisioner(store, engine, settings)
        lock = await provisioner.lifecycle.resolve(spec)
        build = asyncio.create_task(provisioner.builder.ensure(lock, None))
        building = settings.paths.building
        # Poll (generous deadline): the install is linking once files appear in its build dir.
        async with asyncio.timeout(120):
            while not any(count(d) > 200 for d in building.iterdir()):
                await asyncio.sleep(0.01)
        await provisioner.close()
        with pytest.raises(ShuttingDownError):
            await build
        assert list(building.iterdir()) == []
        [record] = store.list_builds()
        assert record.status == "cancelled"
        # rattler's threads had nothing left to write: the dir stays empty.
        await asyncio.sleep(1)
        assert list(building.iterdir()) == []
        assert store.find_env(lock.env_key) is None
