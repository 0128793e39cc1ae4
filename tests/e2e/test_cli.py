"""provisionctl as a user meets it, as a real process: errors in one line (-v for the rest),
`create -f` from a pipe, `--force`, failed creates, Ctrl-C during a build, `| head`, and PATHs
walked up from a subdirectory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, serve_directory, write_project

CTL = [sys.executable, "-m", "provisiond.cli"]


def ctl(daemon: Daemon, *args: str, cwd: Path | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket), "PROVISIONCTL_PROGRESS_DELAY": "0"}
    return subprocess.run([*CTL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=90, **kw)


def test_an_unsolvable_env_is_one_line_and_a_hint_and_the_whole_with_v(daemon: Daemon, channel: Path,
                                                                        tmp_path: Path) -> None:
    write_project(tmp_path / "p", channel, ["hello ==1.0", "hello ==2.0"], name="nope")  # a tree of reasons
    short = ctl(daemon, "warm", str(tmp_path / "p"))
    assert short.returncode == os.EX_DATAERR
    lines = short.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in short.stderr, short.stderr
    assert lines[0].startswith("provisionctl: ") and "cannot be solved: " in lines[0]
    assert lines[1].startswith("hint: ") and lines[1].endswith("add -v for the whole error")
    full = ctl(daemon, "-v", "warm", "nope")
    assert full.returncode == os.EX_DATAERR
    assert len(full.stderr.splitlines()) > 3 and full.stderr.rstrip().endswith("error code: unsolvable (exit 65)")
    assert lines[0].removeprefix("provisionctl: ").split(": ")[0] in full.stderr
    as_json = ctl(daemon, "warm", "nope", "--json")
    assert "\n" in json.loads(as_json.stdout)["error"]["message"]  # tools get the whole message


def test_create_from_a_pipe_keeps_the_text_in_the_store(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not installed (apt: bash)")
    spec = write_project(tmp_path / "src", channel, ["hello"], name="piped") / "environment.yml"
    env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket), "PATH": f"{Path(sys.executable).parent}:"
           f"{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", f"provisionctl create -f <(cat {spec}) --json"], env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["name"] == "piped" and view["status"] == "ready"
    kept = Path(view["source"])
    assert kept.is_relative_to(daemon.home / "sources") and kept.read_text() == spec.read_text()
    spec.unlink()
    assert ctl(daemon, "warm", "piped", "--update").returncode == 0  # the name follows the kept copy


def test_create_onto_an_existing_name_needs_force(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    one = write_project(tmp_path / "one", channel, ["hello ==1.0"], name="tools") / "environment.yml"
    two = write_project(tmp_path / "two", channel, ["hello ==2.0"], name="tools") / "environment.yml"
    first = ctl(daemon, "create", "-f", str(one), "--json")
    assert first.returncode == 0, first.stderr
    again = ctl(daemon, "create", "-f", str(two))
    assert again.returncode == os.EX_USAGE
    assert "exists already" in again.stderr and "--force" in again.stderr
    assert daemon.client.get("/v1/envs/tools")["source"] == str(one)
    forced = ctl(daemon, "create", "-f", str(two), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["env_key"] != json.loads(first.stdout)["env_key"]


def test_a_failed_create_leaves_no_name_and_an_existing_one_keeps_its_env(daemon: Daemon, channel: Path,
                                                                           tmp_path: Path) -> None:
    bad = write_project(tmp_path / "bad", channel, ["hello >=99"], name="tools") / "environment.yml"
    assert ctl(daemon, "create", "-f", str(bad)).returncode == os.EX_DATAERR
    assert ctl(daemon, "show", "tools").returncode == os.EX_NOINPUT
    assert "tools" not in [e["name"] for e in daemon.client.get("/v1/envs")["envs"]]

    good = write_project(tmp_path / "good", channel, ["hello"], name="tools") / "environment.yml"
    created = ctl(daemon, "create", "-f", str(good))
    assert created.returncode == 0
    assert "tools: " in created.stderr and "packages resolved" in created.stderr  # progress, by the file's name:
    before = daemon.client.get("/v1/envs/tools")
    assert ctl(daemon, "create", "-f", str(bad), "--force").returncode == os.EX_DATAERR
    after = daemon.client.get("/v1/envs/tools")
    assert (after["source"], after["env_key"], after["prefix"]) == (before["source"], before["env_key"],
                                                                     before["prefix"])
    assert Path(after["prefix"], "bin", "hello").exists()


def test_ctrl_c_during_warm_says_the_build_goes_on(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    release = threading.Event()
    held: list[str] = []

    def before_get(path: str) -> None:
        if path.endswith((".conda", ".tar.bz2")):
            held.append(path)
            release.wait(60)

    with serve_directory(channel, before_get) as url:
        project = tmp_path / "p"
        project.mkdir()
        (project / "environment.yml").write_text(f"name: slow\nchannels:\n  - {url}\ndependencies:\n  - hello\n")
        env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket), "PROVISIONCTL_PROGRESS_DELAY": "0"}
        # A suite started with `&` from a script inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the child the default disposition, as a terminal would.
        proc = subprocess.Popen([*CTL, "warm", str(project)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while not held:
                assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=30)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert "provisionctl: interrupted; provisiond goes on building slow in the background" in err
        assert "hint: follow it: provisionctl warm slow" in err and "cancel it: provisionctl cancel slow" in err
        done = ctl(daemon, "warm", "slow")  # the build went on: this warm joins or finds it
        assert done.returncode == 0 and Path(done.stdout.strip(), "bin", "hello").exists()


def test_a_reader_that_goes_away_gets_no_traceback(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    for i in range(3):
        write_project(tmp_path / f"p{i}", channel, ["hello"], name=f"env-{i}")
        daemon.ctl("watch", str(tmp_path / f"p{i}"), "--no-warm")
    env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket)}
    for argv in (["list"], ["completion", "bash"], ["--help"]):
        proc = subprocess.Popen([*CTL, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.close()  # like `| head -0`: the reader is gone before the first write
        _, raw = proc.communicate(timeout=30)
        err = raw.decode()
        assert "Traceback" not in err and "BrokenPipe" not in err and err == "", argv
        assert proc.returncode == (0 if argv == ["--help"] else 141), argv  # argparse drops what it cannot write


def test_warm_and_show_dot_walk_up_from_a_subdirectory(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", channel, ["hello"], name="walker")
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    warm = ctl(daemon, "warm", ".", cwd=deep)
    assert warm.returncode == 0, warm.stderr
    show = ctl(daemon, "show", ".", "--json", cwd=deep)
    assert show.returncode == 0, show.stderr
    view = json.loads(show.stdout)
    assert view["name"] == "walker" and view["source"] == str(project.resolve()) and view["prefix"] == \
        warm.stdout.strip()
    assert [e["name"] for e in daemon.client.get("/v1/envs")["envs"]] == ["walker"]  # no project for src/pkg
    outside = ctl(daemon, "show", str(tmp_path))
    assert outside.returncode == os.EX_NOINPUT and "no environment.yml in this directory or above" in outside.stderr


def test_cancel_stops_the_build_and_replaces_nothing(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    release = threading.Event()
    held: list[str] = []

    def before_get(path: str) -> None:
        if path.endswith((".conda", ".tar.bz2")) and not release.is_set():
            held.append(path)
            release.wait(60)

    with serve_directory(channel, before_get) as url:
        project = tmp_path / "p"
        project.mkdir()
        (project / "environment.yml").write_text(f"name: slow\nchannels:\n  - {url}\ndependencies:\n  - hello\n")
        env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket)}
        # A suite started with `&` from a script inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the child the default disposition, as a terminal would.
        proc = subprocess.Popen([*CTL, "warm", str(project)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while not held:
                assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
                time.sleep(0.05)
            cancel = ctl(daemon, "cancel", "slow")
            assert cancel.returncode == 0, cancel.stderr
            assert cancel.stdout.startswith("slow: cancelled build ") and "the env it had stays" in cancel.stdout
            _out, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == os.EX_TEMPFAIL, err
        assert "the build of slow was cancelled" in err and "Traceback" not in err
        view = daemon.client.get("/v1/envs/slow")
        assert view["prefix"] is None
        builds = daemon.client.get("/v1/builds")["builds"]
        assert [b["status"] for b in builds] == ["cancelled"]
        assert ctl(daemon, "cancel", "slow").stdout.strip() == "slow: no build running, nothing to cancel"
        again = ctl(daemon, "warm", "slow")
        assert again.returncode == 0 and Path(again.stdout.strip(), "bin", "hello").exists()


HEAVY = {"argparse", "json", "re", "enum", "socket", "pathlib", "typing", "dataclasses", "urllib.parse",
         "threading", "ruamel.yaml", "rattler", "aiohttp"}


def test_everyday_commands_import_nothing_heavy(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    """What keeps them within 1.5x of `python -c pass` (benchmarks/bench_cli.py measures it)."""
    project = write_project(tmp_path / "p", channel, ["hello"], name="light")
    (project / "src").mkdir()
    assert daemon.ctl("warm", str(project))[0] == 0
    env = {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket), "PYTHONPROFILEIMPORTTIME": "1"}
    for argv in (["--version"], ["list"], ["list", "--json"], ["status", "-v"], ["show", "light"],
                 ["show", str(project / "src")], ["-q", "warm", "light"], ["remove", "nothing-here"],
                 ["completion", "--complete", "2", "bash", "--", "provisionctl", "show", "li"]):
        proc = subprocess.run([*CTL, *argv], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode in (0, os.EX_NOINPUT), proc.stderr
        imported = {line.split("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "provisiond.cli.commands" in imported or argv == ["--version"]
        assert not imported & HEAVY, (argv, imported & HEAVY)
