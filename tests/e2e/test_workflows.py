"""The conda workflows: export in every format, create from each, clone, remove, channel rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisiond.testing.channel import build_channel, hello_pkg
from tests.conftest import Daemon, write_project

FORMATS = [
    ("yml", [], "environment.yml"),
    ("yml", ["--no-builds"], "environment.yml"),
    ("yml", ["--from-history"], "environment.yml"),
    ("explicit", [], "explicit.txt"),
    ("conda-lock", [], "conda-lock.yml"),
]


def warm(daemon: Daemon, target: str) -> dict:
    code, out, err = daemon.ctl("warm", target, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize(("fmt", "flags", "file_name"), FORMATS)
def test_round_trip_through_each_export_format(daemon: Daemon, channel: Path, tmp_path: Path,
                                               fmt: str, flags: list[str], file_name: str) -> None:
    project = write_project(tmp_path / "src", channel, ["hello", "greet-data"], name="src",
                            extra="variables:\n  MODE: dev\n")
    original = warm(daemon, str(project))
    exported = tmp_path / "out" / file_name
    exported.parent.mkdir()
    code, out, err = daemon.ctl("export", "src", "--format", fmt, *flags, "-f", str(exported))
    assert code == 0, err
    text = exported.read_text()
    assert "prefix:" not in text and str(daemon.home) not in text

    code, out, err = daemon.ctl("create", "-f", str(exported), "-n", "copy", "--json")
    assert code == 0, err
    copy = json.loads(out)
    assert copy["env_key"] == original["env_key"] and copy["prefix"] == original["prefix"]
    assert len(daemon.client.get("/v1/builds")["builds"]) == 1  # the copy cost no build


def test_export_contents(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello >=2", "tool-a"], name="p",
                            extra="variables:\n  MODE: dev\n")
    (project / ".env").write_text("API_TOKEN=very-secret\n")
    warm(daemon, str(project))
    _, pinned, _ = daemon.ctl("export", "p")
    assert "\n  - hello=2.0=0\n" in pinned and "\n  - libgreet=1.0=0\n" in pinned  # conda's layout, unquoted
    assert f"\n  - {channel.as_uri()}\n" in pinned and "  - nodefaults" in pinned
    _, portable, _ = daemon.ctl("export", "p", "--no-builds")
    assert "\n  - hello=2.0\n" in portable and "=0\n" not in portable
    _, history, _ = daemon.ctl("export", "p", "--from-history")
    assert "\n  - hello>=2\n" in history and "libgreet" not in history and "variables:\n  MODE: dev\n" in history
    _, explicit, _ = daemon.ctl("export", "p", "--explicit")
    assert "@EXPLICIT" in explicit and "#sha256:" in explicit and "\n\n" not in explicit.split("@EXPLICIT")[1]
    for text in (pinned, portable, history, explicit):
        assert "very-secret" not in text and "prefix:" not in text


def test_from_history_keeps_channel_pins(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    other = build_channel(tmp_path / "other-channel", [hello_pkg(version="3.0")])
    project = write_project(tmp_path / "p", channel, [f"{other.as_uri()}::hello", "tool-a"], name="pins")
    view = warm(daemon, str(project))
    code, out, _ = daemon.ctl("show", "pins", "--lock", "--json")
    hello = next(p for p in json.loads(out)["lock"]["packages"] if p["name"] == "hello")
    assert hello["version"] == "3.0" and hello["url"].startswith(other.as_uri())
    _, history, _ = daemon.ctl("export", "pins", "--from-history")
    assert f"\n  - {other.as_uri()}::hello\n" in history  # conda/conda#12842 drops these; we must not
    exported = tmp_path / "h.yml"
    exported.write_text(history)
    code, out, err = daemon.ctl("create", "-f", str(exported), "-n", "again", "--json")
    assert code == 0, err
    assert json.loads(out)["env_key"] == view["env_key"]


def test_channel_priority_strict_and_flexible(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    newer = build_channel(tmp_path / "newer", [hello_pkg(version="3.0")])
    deps = ["hello"]
    body = f"channels:\n  - {channel.as_uri()}\n  - {newer.as_uri()}\ndependencies:\n  - hello\n"
    strict = tmp_path / "strict"
    strict.mkdir()
    (strict / "environment.yml").write_text("name: strict\n" + body)
    flexible = tmp_path / "flexible"
    flexible.mkdir()
    (flexible / "environment.yml").write_text("name: flexible\nchannel_priority: flexible\n" + body)
    assert deps
    for project, version in ((strict, "2.0"), (flexible, "3.0")):
        view = warm(daemon, str(project))
        _code, out, _ = daemon.ctl("show", view["name"], "--lock", "--json")
        hello = next(p for p in json.loads(out)["lock"]["packages"] if p["name"] == "hello")
        assert hello["version"] == version, project.name


def test_pixi_lock_gives_the_same_env(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    import rattler

    from provisiond.domain.lock import Lock
    from provisiond.engines.rattler import record_of

    project = write_project(tmp_path / "p", channel, ["tool-a"], name="p")
    original = warm(daemon, str(project))
    lock = Lock.from_wire(daemon.client.get("/v1/envs/p/lock"))
    platform = rattler.LockPlatform(lock.platform)
    pixi = rattler.LockFile([platform])
    pixi.set_channels("default", [rattler.LockChannel(channel.as_uri())])
    for p in lock.packages:
        pixi.add_conda_package("default", platform, record_of(p))
    pixi.to_path(tmp_path / "pixi.lock")
    code, out, err = daemon.ctl("create", "-f", str(tmp_path / "pixi.lock"), "-n", "from-pixi", "--json")
    assert code == 0, err
    assert json.loads(out)["env_key"] == original["env_key"]


def test_clone_is_o1_and_remove_never_deletes_a_used_env(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="orig")
    original = warm(daemon, str(project))
    envs = sorted(p.name for p in (daemon.home / "envs").iterdir())

    code, out, err = daemon.ctl("clone", "orig", "twin", "--json")
    assert code == 0, err
    twin = json.loads(out)
    assert twin["env_key"] == original["env_key"] and twin["prefix"] == original["prefix"]
    assert sorted(p.name for p in (daemon.home / "envs").iterdir()) == envs
    assert daemon.ctl("clone", "orig", "twin")[0] == 64  # name taken

    code, out, _ = daemon.ctl("remove", "orig", "--json")
    assert code == 0 and json.loads(out)["env_deleted"] is False
    assert Path(original["prefix"], "bin", "hello").exists()
    code, out, _ = daemon.ctl("warm", "twin", "--json")
    assert code == 0 and json.loads(out)["prefix"] == original["prefix"]

    code, out, _ = daemon.ctl("remove", "twin", "--json")
    assert code == 0 and json.loads(out)["env_deleted"] is True
    assert not Path(original["prefix"]).exists()
    assert not (daemon.home / "locks" / f"{original['env_key']}.json").exists()
    assert daemon.ctl("show", "twin")[0] == 66
