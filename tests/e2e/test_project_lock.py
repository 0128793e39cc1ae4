"""Project lockfiles end to end (issue 12.1, 12.2): `lock`, `lock --check`, `update`, a project's
conda-lock.yml installed without a solve on a second machine, re-locked and written back on edit."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import rattler

from provisiond.domain.lockfiles import parse_conda_lock
from provisiond.testing.channel import build_channel, demo_packages, hello_pkg
from tests.conftest import Daemon, write_project

OTHER = "osx-arm64" if str(rattler.Subdir.current()) != "osx-arm64" else "linux-64"


@pytest.fixture
def growing(tmp_path: Path) -> Path:
    """A channel of its own (it gains a version during a test): hello 1.0 only, then more."""
    packages = [p for p in demo_packages() if not (p.name == "hello" and p.version == "2.0")]
    root = build_channel(tmp_path / "growing", packages)
    build_channel(root, [p for p in packages if p.noarch or p.name == "libgreet"], platform=OTHER)
    return root


def gain_hello_2(channel: Path) -> None:
    build_channel(channel, [hello_pkg("hello", "2.0", depends=("libgreet >=1.0",))])


@pytest.fixture
def second(tmp_path: Path, short_dir: Path) -> Iterator[Daemon]:
    """Another machine: a daemon with its own home."""
    d = Daemon(home=tmp_path / "home-b", socket=short_dir / "b.sock").start()
    yield d
    assert d.stop() == 0


def ctl_json(daemon: Daemon, *args: str) -> dict:
    code, out, err = daemon.ctl(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def versions(daemon: Daemon, name: str) -> dict[str, str]:
    lock = daemon.client.get(f"/v1/envs/{name}/lock")
    return {p["name"]: p["version"] for p in lock["packages"]}


def test_lock_for_two_platforms_then_create_on_a_second_home_gives_the_same_env(
        daemon: Daemon, second: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", growing, ["libgreet", "greet-data"], name="proj")
    here = str(rattler.Subdir.current())
    answer = ctl_json(daemon, "lock", str(project), "--platform", here, "--platform", OTHER)
    lock_file = project / "conda-lock.yml"
    assert answer["file"] == str(lock_file) and answer["written"] and set(answer["packages"]) == {here, OTHER}
    assert daemon.client.get("/v1/envs")["envs"] == []  # solve only: nothing registered, nothing built
    # What conda-lock, micromamba and conda's plugin read (rattler's reader is theirs).
    assert {p.name for p in rattler.LockFile.from_path(lock_file).default_environment().platforms()} == {here, OTHER}
    assert parse_conda_lock(lock_file.read_text(), "x", OTHER).packages
    created = ctl_json(second, "create", "-f", str(lock_file), "-n", "copy")
    assert created["env_key"] == answer["env_keys"][here]
    assert ctl_json(daemon, "warm", str(project))["env_key"] == answer["env_keys"][here]
    again = ctl_json(daemon, "lock", str(project))  # the file's lock has both platforms: kept as they are
    assert again["platforms"] == sorted([here, OTHER]) or set(again["platforms"]) == {here, OTHER}
    assert not again["written"]


def test_lock_check_fails_when_the_file_changed(daemon: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "ci", growing, ["hello"], name="ci")
    code, _out, err = daemon.ctl("lock", str(project), "--check")
    assert code == 1 and "does not exist" in err
    ctl_json(daemon, "lock", str(project))
    assert daemon.ctl("lock", str(project), "--check")[0] == 0
    other = tmp_path / "elsewhere-lock.yml"
    assert ctl_json(daemon, "lock", str(project), "-f", str(other))["file"] == str(other)
    assert other.read_text().replace("ci/environment.yml", "environment.yml") == \
        (project / "conda-lock.yml").read_text()  # its sources are relative to the lock's directory
    assert daemon.ctl("lock", str(project), "--check", "-f", str(other))[0] == 0
    spec = project / "environment.yml"
    spec.write_text("# a comment and another order\n" + spec.read_text() + "variables:\n  X: '1'\n")
    assert daemon.ctl("lock", str(project), "--check")[0] == 0  # the same request: still current
    spec.write_text(spec.read_text().replace("  - hello\n", "  - hello\n  - tool-a\n"))
    code, _out, err = daemon.ctl("lock", str(project), "--check")
    assert code == 1 and "stale" in err and "provisionctl lock" in err


def test_two_machines_get_the_locked_versions_without_a_solve(
        daemon: Daemon, second: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "team", growing, ["hello"], name="team")
    ctl_json(daemon, "lock", str(project))
    assert versions_in(project) == {"hello": "1.0", "libgreet": "1.0"}
    gain_hello_2(growing)  # the channel moves on; a solve would now pick hello 2.0
    view = ctl_json(second, "watch", str(project))
    view = second.wait_for(view["name"], lambda v: v["status"] == "ready")
    assert versions(second, view["name"]) == {"hello": "1.0", "libgreet": "1.0"}
    log = second.log.read_text() if second.log else ""
    assert "installing from conda-lock.yml as locked" in log
    assert re.search(r"\d+ packages in [\d.]+ ms", log) is None, log  # no solver ran on B (its log says each)


def versions_in(project: Path) -> dict[str, str]:
    lock = parse_conda_lock((project / "conda-lock.yml").read_text(), "x", str(rattler.Subdir.current()))
    return {p.name: p.version for p in lock.packages}


def test_an_edit_relocks_keeping_the_previous_packages_and_writes_the_lock_back(
        daemon: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "edit", growing, ["hello"], name="edit")
    ctl_json(daemon, "lock", str(project))
    gain_hello_2(growing)
    spec = project / "environment.yml"
    spec.write_text(spec.read_text().replace("  - hello\n", "  - hello\n  - tool-a\n"))
    view = ctl_json(daemon, "warm", str(project))
    assert versions(daemon, "edit") == {"hello": "1.0", "libgreet": "1.0", "tool-a": "1.0"}  # minimal churn
    assert versions_in(project) == versions(daemon, "edit")
    assert daemon.ctl("lock", str(project), "--check")[0] == 0  # the daemon wrote it back, current
    # Removing a dependency prunes it, without a solve.
    spec.write_text(spec.read_text().replace("  - tool-a\n", ""))
    ctl_json(daemon, "warm", str(project))
    assert versions_in(project) == {"hello": "1.0", "libgreet": "1.0"}
    assert "without a solve" in (daemon.log.read_text() if daemon.log else "")
    # `update hello` takes the channel's newer hello; the rest stays as locked.
    updated = ctl_json(daemon, "update", "edit", "hello")
    assert updated["env_key"] != view["env_key"]
    assert versions_in(project) == {"hello": "2.0", "libgreet": "1.0"}
    code, _out, err = daemon.ctl("update", "edit", "numpy")
    assert code != 0 and "numpy: not in" in err


def test_a_lock_for_other_platforms_only_is_a_clear_error(daemon: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "mac", growing, ["libgreet"], name="mac")
    ctl_json(daemon, "lock", str(project), "--platform", OTHER)
    code, out, _err = daemon.ctl("warm", str(project), "--json")
    error = json.loads(out)["error"]
    assert code == 65 and error["code"] == "lock-platform", error
    assert OTHER in error["message"] and "--platform" in error["hint"]


def test_the_trust_gate_covers_the_lock(daemon: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "cloned", growing, ["libgreet"], name="cloned")
    ctl_json(daemon, "lock", str(project))
    ctl_json(daemon, "warm", str(project))  # allowed as it is now, lock included
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(growing, elsewhere)
    lock_file = project / "conda-lock.yml"
    lock_file.write_text(lock_file.read_text().replace(growing.as_uri(), elsewhere.as_uri()))  # a pulled lock
    code, out, _err = daemon.ctl("warm", "cloned", "--json")  # by name: `warm PATH` would allow it
    error = json.loads(out)["error"]
    assert code != 0 and error["code"] == "project-blocked" and "conda-lock.yml" in error["message"], error
    assert daemon.ctl("allow", str(project))[0] == 0
    assert ctl_json(daemon, "warm", "cloned")["status"] == "ready"


def test_write_project_locks_gives_a_project_its_lock(tmp_path: Path, short_dir: Path, growing: Path) -> None:
    class Writing(Daemon):
        def environ(self) -> dict[str, str]:
            return {**super().environ(), "PROVISIOND_WRITE_PROJECT_LOCKS": "true"}

    d = Writing(home=tmp_path / "home-w", socket=short_dir / "w.sock").start()
    try:
        project = write_project(tmp_path / "fresh", growing, ["hello"], name="fresh")
        view = ctl_json(d, "warm", str(project))
        assert versions_in(project) == versions(d, "fresh")
        assert ctl_json(d, "lock", str(project), "--check")["current"]
        assert view["status"] == "ready"
    finally:
        assert d.stop() == 0


def test_a_broken_lock_fails_the_warm_with_its_file_named(daemon: Daemon, growing: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "broken", growing, ["libgreet"], name="broken")
    (project / "conda-lock.yml").write_text("version: 1\npackage: [unclosed\n")
    code, out, _err = daemon.ctl("warm", str(project), "--json")
    error = json.loads(out)["error"]
    assert code == 65 and "conda-lock.yml" in error["message"], error
    assert daemon.client.get("/v1/envs/broken")["status"] == "failed"


def test_update_of_a_named_env_moves_only_the_named_package(daemon: Daemon, growing: Path, tmp_path: Path) -> None:
    spec = write_project(tmp_path / "named", growing, ["hello", "tool-a"], name="named") / "environment.yml"
    ctl_json(daemon, "create", "-f", str(spec))
    build_channel(growing, [hello_pkg("hello", "2.0", depends=("libgreet >=1.0",)),
                            hello_pkg("tool-a", "2.0", depends=("libgreet >=1.0",), message="tool-a says hi")])
    ctl_json(daemon, "update", "named", "hello")
    assert versions(daemon, "named") == {"hello": "2.0", "libgreet": "1.0", "tool-a": "1.0"}
    ctl_json(daemon, "update", "named")  # no names: everything, like warm --update
    assert versions(daemon, "named") == {"hello": "2.0", "libgreet": "1.0", "tool-a": "2.0"}
    assert not (spec.parent / "conda-lock.yml").exists()  # a named env from a file writes no lock
