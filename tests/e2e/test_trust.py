"""The trust gate through the real daemon, its API and provisionctl (the shells: test_shells.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from provisiond.config.settings import Paths
from provisiond.shell.activation import NOTICE, STAMP, project_activation_dir
from provisiond.testing.channel import build_channel, hello_pkg
from tests.conftest import Daemon, write_project


def paths(daemon: Daemon) -> Paths:
    return Paths(home=daemon.home, socket=daemon.socket, state=daemon.state)


def hook_watch(socket: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """What the shell hook runs on entering a project with no env."""
    return subprocess.run([sys.executable, "-m", "provisiond.ctl", "--socket", str(socket), "watch", "--if-allowed",
                           str(directory)], capture_output=True, text=True, env={**os.environ})


def test_the_api_refuses_an_unallowed_project_and_says_how_to_allow_it(daemon: Daemon, channel: Path,
                                                                       tmp_path: Path) -> None:
    project = write_project(tmp_path / "cloned", channel, ["hello"], name="cloned")
    status, answer = daemon.raw("POST", "/v1/projects", {"path": str(project)})
    assert status == 403
    assert answer["error"]["code"] == "project-blocked"
    assert answer["error"]["message"] == (f"provisiond: {project} is blocked (its environment.yml is not allowed "
                                          "yet); run 'provisionctl allow' to trust it")
    assert answer["error"]["hint"] == f"run: provisionctl allow {project}"
    assert daemon.client.get("/v1/envs")["envs"] == [] and daemon.client.get("/v1/builds")["builds"] == []
    notice = (project_activation_dir(paths(daemon), project) / NOTICE).read_text().splitlines()
    assert notice[1] == answer["error"]["message"]

    run = hook_watch(daemon.socket, project)
    assert (run.returncode, run.stdout) == (0, "")
    assert run.stderr == answer["error"]["message"] + "\n"

    code, out, err = daemon.ctl("allow", str(project / "environment.yml"), "--json")
    assert code == 0, err
    assert json.loads(out)["names"] == ["cloned"]
    view = daemon.wait_for("cloned", lambda v: v["status"] == "ready")
    assert view["prefix"] and not (project_activation_dir(paths(daemon), project) / NOTICE).exists()
    listed = daemon.client.get("/v1/trust")
    assert [a["path"] for a in listed["allowed"]] == [str(project)] and listed["trusted_prefixes"] == []
    run = hook_watch(daemon.socket, project)
    assert (run.returncode, run.stderr) == (0, "")  # ready: the next prompt activates, nothing to say


def test_a_dependency_edit_keeps_trust_and_a_channel_edit_blocks(daemon: Daemon, channel: Path,
                                                                 tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    assert daemon.ctl("watch", str(project))[0] == 0  # typed on purpose: consent
    first = daemon.wait_for("p", lambda v: v["status"] == "ready")

    write_project(project, channel, ["hello", "tool-a"], name="p")  # a pure dependency edit
    second = daemon.wait_for("p", lambda v: v["status"] == "ready" and v["env_key"] != first["env_key"])

    other = tmp_path / "mirror"
    other.symlink_to(channel)
    write_project(project, other, ["hello", "tool-a"], name="p")  # a new channel
    blocked = daemon.wait_for("p", lambda v: v["status"] == "blocked")
    assert blocked["env_key"] == second["env_key"] and blocked["prefix"] == second["prefix"]  # kept, not served
    assert "(its environment.yml changed: channels)" in blocked["error"]
    activation = project_activation_dir(paths(daemon), project)
    assert not (activation / STAMP).exists() and (activation / NOTICE).is_file()  # open shells deactivate
    code, out, err = daemon.ctl("warm", "p", "--json")
    assert code == 77 and json.loads(out)["error"]["code"] == "project-blocked", err
    assert daemon.ctl("warm", str(project))[0] == 0  # `warm PATH` is typed on purpose: consent again
    assert daemon.client.get("/v1/envs/p")["status"] == "ready"


def test_deny_revokes_and_create_f_is_consent_for_its_file(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    assert daemon.ctl("watch", str(project))[0] == 0
    daemon.wait_for("p", lambda v: v["status"] == "ready")
    code, out, _ = daemon.ctl("deny", str(project / "sub" / ".."), "--json")
    assert code == 0 and json.loads(out) == {"path": str(project), "denied": True, "names": ["p"]}
    assert daemon.client.get("/v1/envs/p")["status"] == "blocked"
    assert daemon.ctl("warm", "p")[0] == 77
    assert not (project_activation_dir(paths(daemon), project) / STAMP).exists()
    assert daemon.client.get("/v1/trust")["allowed"] == []

    file = write_project(tmp_path / "files", channel, ["hello"]) / "environment.yml"
    assert daemon.ctl("create", "-f", str(file), "-n", "named")[0] == 0
    file.write_text(file.read_text() + "variables:\n  NEW: one\n")
    code, out, _ = daemon.ctl("warm", "named", "--json")
    assert code == 77 and f"run: provisionctl allow {file}" == json.loads(out)["error"]["hint"]
    assert daemon.ctl("allow", str(file))[0] == 0
    assert daemon.ctl("warm", "named")[0] == 0


def test_trusted_prefixes_need_no_allow(channel: Path, tmp_path: Path, short_dir: Path) -> None:
    trusted = tmp_path / "work"
    project = write_project(trusted / "mine", channel, ["hello"], name="mine")
    elsewhere = write_project(tmp_path / "elsewhere", channel, ["hello"], name="elsewhere")
    daemon = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock")
    daemon.base_env["PROVISIOND_TRUSTED_PREFIXES"] = f"{trusted}/"
    daemon.start()
    try:
        run = hook_watch(daemon.socket, project)
        assert run.stderr == f"provisiond: preparing the env of {project}; it activates at a prompt once ready\n"
        daemon.wait_for("mine", lambda v: v["status"] == "ready")
        assert "is blocked" in hook_watch(daemon.socket, elsewhere).stderr
        assert daemon.client.get("/v1/trust") == {"allowed": [], "trusted_prefixes": [str(trusted)]}
    finally:
        assert daemon.stop() == 0


def test_the_hook_command_says_why_in_one_line(daemon: Daemon, channel: Path, tmp_path: Path,
                                               short_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "environment.yml").write_text("name: b\ndependencies:\n  - hello\n  bad: [\n")
    run = hook_watch(daemon.socket, broken)
    assert run.returncode == 0 and len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith(f"provisiond: {broken}: {broken}/environment.yml:4:")

    down = hook_watch(short_dir / "nobody.sock", broken)
    assert down.returncode == 69  # the hook asks again on the next visit
    assert down.stderr == (f"provisiond: the daemon is not running (no answer on {short_dir}/nobody.sock), so "
                           f"{broken} has no env; start it: provisiond, or systemctl --user start provisiond.socket\n")


def test_a_failed_build_leaves_a_notice_that_a_fix_removes(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    assert daemon.ctl("watch", str(project))[0] == 0
    good = daemon.wait_for("p", lambda v: v["status"] == "ready")
    notice = project_activation_dir(paths(daemon), project) / NOTICE

    write_project(project, channel, ["hello>=99"], name="p")
    daemon.wait_for("p", lambda v: v["status"] == "failed")
    key, line = notice.read_text().splitlines()
    assert line.startswith("provisiond: p: the build failed: ") and line.endswith(f"; see: provisionctl log {project}")
    assert (project_activation_dir(paths(daemon), project) / STAMP).is_file()  # the previous env stays active

    (project / "environment.yml").write_text("name: p\ndependencies: [\n")
    daemon.wait_for("p", lambda v: v["status"] == "failed" and "environment.yml:3:1:" in (v["error"] or ""))
    key2, line2 = notice.read_text().splitlines()
    assert key2 != key and "(the previous env stays active); see: provisionctl show p" in line2

    write_project(project, channel, ["hello"], name="p")
    fixed = daemon.wait_for("p", lambda v: v["status"] == "ready")
    assert fixed["env_key"] == good["env_key"] and not notice.exists()


def test_a_lockfile_env_is_blocked_when_its_channels_change(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    assert daemon.ctl("warm", str(project))[0] == 0
    lockfile = tmp_path / "conda-lock.yml"
    assert daemon.ctl("export", "p", "--format", "conda-lock", "-f", str(lockfile))[0] == 0
    assert daemon.ctl("create", "-f", str(lockfile), "-n", "locked")[0] == 0  # consent for this lock
    assert daemon.ctl("warm", "locked")[0] == 0

    mirror = tmp_path / "mirror"
    mirror.symlink_to(channel)
    lockfile.write_text(lockfile.read_text().replace(channel.as_uri(), mirror.as_uri()))
    code, out, _ = daemon.ctl("warm", "locked", "--json")
    error = json.loads(out)["error"]
    assert code == 77 and "(its conda-lock.yml changed: channels)" in error["message"], error
    assert daemon.ctl("allow", str(lockfile))[0] == 0
    assert daemon.ctl("warm", "locked")[0] == 0


def test_a_new_name_in_dotenv_blocks_and_a_rotated_value_does_not(daemon: Daemon, channel: Path,
                                                                  tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    (project / ".env").write_text("TOKEN=one\n")
    assert daemon.ctl("watch", str(project))[0] == 0
    daemon.wait_for("p", lambda v: v["status"] == "ready")
    rendered = project_activation_dir(paths(daemon), project) / "activate.json"
    (project / ".env").write_text("TOKEN=two\n")  # a rotated secret: re-rendered, still allowed
    end = time.monotonic() + 60
    while json.loads(rendered.read_text())["set"].get("TOKEN") != "two":
        assert time.monotonic() < end, "the new .env value was never rendered"
        time.sleep(0.05)
    assert daemon.client.get("/v1/envs/p")["status"] == "ready"

    (project / ".env").write_text("TOKEN=two\nPYTHONSTARTUP=/tmp/evil.py\n")
    blocked = daemon.wait_for("p", lambda v: v["status"] == "blocked")
    assert "(its environment.yml changed: .env names)" in blocked["error"]
    assert not rendered.exists()


def test_a_dependency_that_names_a_new_channel_blocks(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = build_channel(tmp_path / "evil", [hello_pkg("evil", "1.0", files={
        "etc/conda/activate.d/evil.sh": f"touch {marker}\n"})])
    project = write_project(tmp_path / "p", channel, ["hello"], name="p")
    assert daemon.ctl("watch", str(project))[0] == 0
    daemon.wait_for("p", lambda v: v["status"] == "ready")
    write_project(project, channel, ["hello", f"{evil.as_uri()}::evil"], name="p")  # a `git pull`
    blocked = daemon.wait_for("p", lambda v: v["status"] == "blocked")
    assert "(its environment.yml changed: channels)" in blocked["error"]
    assert not (project_activation_dir(paths(daemon), project) / STAMP).exists() and not marker.exists()


def test_a_fifo_dotenv_in_a_clone_does_not_stall_the_daemon(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "cloned", channel, ["hello"], name="cloned")
    os.mkfifo(project / ".env")  # or `.env -> /dev/zero`: a read would block, or never end
    run = hook_watch(daemon.socket, project)  # used to hang the daemon's loop on the read
    assert "is blocked" in run.stderr
    assert daemon.client.get("/v1/health")["status"] == "ok"
