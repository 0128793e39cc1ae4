"""Channels as conda reads them, solved for real by the rattler engine on local channels (issue 12.6):
``defaults`` and a file without ``channels:`` use ``default_channels``; a relative channel is relative to the
file; a ``null`` in repodata is a channel error naming the channel and the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from provisiond.config.settings import load_settings
from provisiond.domain.errors import ChannelDataError
from provisiond.domain.spec import load_spec, parse_spec
from provisiond.engines.rattler import RattlerEngine


def engine(tmp_path: Path, default_channels: list[str]) -> RattlerEngine:
    settings = load_settings({"home": str(tmp_path / "home"), "socket": "/tmp/pvd-unused.sock",
                              "default_channels": default_channels}, environ={}, config_file=tmp_path / "none.toml")
    return RattlerEngine(settings, environ={})


@pytest.mark.parametrize("channels", ["channels: [defaults]\n", ""])
async def test_defaults_and_no_channels_use_default_channels(tmp_path: Path, channel: Path, channels: str) -> None:
    rattler_engine = engine(tmp_path, [channel.as_uri()])
    spec = parse_spec(channels + "dependencies: [hello]\n")
    assert rattler_engine.channel_urls(spec) == [channel.as_uri() + "/"]
    lock = await rattler_engine.solve(spec)
    assert "hello" in {p.name for p in lock.packages}
    assert all(p.url.startswith(channel.as_uri()) for p in lock.packages)


def test_defaults_is_not_a_channel_named_defaults(tmp_path: Path) -> None:
    urls = engine(tmp_path, ["https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r"]).channel_urls(
        parse_spec("channels: [conda-forge, defaults]\ndependencies: []\n"))
    assert urls == ["https://conda.anaconda.org/conda-forge/", "https://repo.anaconda.com/pkgs/main/",
                    "https://repo.anaconda.com/pkgs/r/"]
    assert engine(tmp_path, []).channel_urls(parse_spec("dependencies: []\n")) == []


async def test_a_relative_channel_is_relative_to_the_file(tmp_path: Path, channel: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    shutil.copytree(channel, project / "local-channel")
    (project / "environment.yml").write_text("channels: [./local-channel]\ndependencies: [hello]\n")
    monkeypatch.chdir(tmp_path)  # not the project: the daemon's working directory is elsewhere
    spec = load_spec(project / "environment.yml")
    lock = await engine(tmp_path, []).solve(spec)
    assert all(p.url.startswith((project / "local-channel").as_uri()) for p in lock.packages)


async def test_null_in_repodata_is_a_channel_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    for subdir in ("linux-64", "noarch"):
        (broken / subdir).mkdir(parents=True)
        (broken / subdir / "repodata.json").write_text(json.dumps(
            {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}))
    record = {"name": "foo", "version": None, "build": "0", "build_number": 0, "depends": [], "subdir": "noarch"}
    (broken / "noarch" / "repodata.json").write_text(json.dumps(
        {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {"foo-1.0-0.conda": record}}))
    spec = parse_spec(f"channels: [{broken.as_uri()}]\ndependencies: [foo]\n")
    with pytest.raises(ChannelDataError) as info:
        await engine(tmp_path, []).solve(spec)
    assert info.value.message == f"channel {broken.as_uri()} (noarch): package foo-1.0-0.conda has null for version"
    assert "network" not in (info.value.hint or "") and info.value.code == "bad-channel"
