"""The rattler engine's time limits against a real HTTP channel that stops answering."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provisiond.config.settings import load_settings
from provisiond.domain.errors import ChannelTimeoutError
from provisiond.domain.spec import parse_spec
from provisiond.engines.rattler import RattlerEngine
from tests.conftest import serve_directory


async def test_a_package_download_that_stalls_is_a_channel_timeout(tmp_path: Path, channel: Path) -> None:
    release = threading.Event()

    def before_get(path: str) -> None:
        if path.endswith((".conda", ".tar.bz2")):  # repodata is served, packages never
            release.wait(120)

    settings = load_settings({"home": str(tmp_path / "home"), "socket": "/tmp/pvd-unused.sock",
                              "engine": "rattler", "connect_timeout": "1", "fetch_timeout": "1"},
                             environ={}, config_file=tmp_path / "none.toml")
    engine = RattlerEngine(settings)
    lines: list[str] = []
    try:
        with serve_directory(channel, before_get) as url:
            lock = await engine.solve(parse_spec(f"channels:\n  - {url}\ndependencies:\n  - tool-a\n"))
            with pytest.raises(ChannelTimeoutError, match="made no progress") as err:
                await engine.install(lock, tmp_path / "build", tmp_path / "env", lines.append)
            release.set()
    finally:
        release.set()
    assert url in err.value.message and "fetch_timeout" in (err.value.hint or "")
    assert any("no progress" in line for line in lines)  # in the build log too
