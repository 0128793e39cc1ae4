"""Cold starts: name activation in the store, `provisionctl run` and `scripts/cold-start`, daemon stopped.

One store is built once for the module by a real daemon, which is then stopped: every `run` and
`cold-start` here works without it. Tests that need a daemon (GC, an env not ready yet) start their own.
`provisionctl run NAME -- CMD` of a ready env takes ctl.py's fast path (exec through activate.sh);
a PATH, or a NAME without `--`, goes through cli.main and coldstart.py (exec'd directly when the env
has no activate.d scripts): the tests run both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisiond.cli import coldstart
from provisiond.config.settings import Paths
from provisiond.shell import activation
from provisiond.store import store
from tests.conftest import REPO, Daemon, write_project

COLD_START = REPO / "scripts" / "cold-start"
WAIT = 60  # seconds: a hang guard, never a timing assertion


@dataclass
class Built:
    """Projects app (hello: activate.d scripts) and plain (libgreet: none), a clone, a file env; no daemon."""

    home: Path
    socket: Path
    paths: Paths
    environ: dict[str, str]
    project: Path
    plain_project: Path
    app: dict
    plain: dict

    def target(self, which: str) -> str:
        """``app``/``plain`` by name (the fast path), ``app-dir``/``plain-dir`` by path (cli.main)."""
        return {"app-dir": str(self.project), "plain-dir": str(self.plain_project)}.get(which, which)

    def ctl(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """provisionctl through its console entry point, as users run it."""
        argv = [sys.executable, "-m", "provisiond.ctl", "--home", str(self.home), "--socket", str(self.socket), *args]
        return subprocess.run(argv, env=env or self.environ, capture_output=True, text=True, timeout=WAIT)


@pytest.fixture(scope="module")
def built(channel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("cold")
    short = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    daemon = Daemon(home=root / "home", socket=short / "d.sock").start()
    try:
        project = write_project(root / "app", channel, ["hello"], name="app",
                                extra="variables:\n  APP_MODE: prod\n")
        (project / ".env").write_text("SECRET_TOKEN=s3cr3t-value\n")
        code, out, err = daemon.ctl("warm", str(project), "--json")
        assert code == 0, err
        app = json.loads(out)
        plain_project = write_project(root / "plain", channel, ["libgreet"], name="plain",
                                      extra="variables:\n  PLAIN_VAR: 'a b $HOME'\n")
        code, out, err = daemon.ctl("warm", str(plain_project), "--json")
        assert code == 0, err
        plain = json.loads(out)
        assert daemon.ctl("clone", "app", "app-copy")[0] == 0
        tool = write_project(root / "tool", channel, ["tool-a"]) / "environment.yml"
        assert daemon.ctl("create", "-f", str(tool), "-n", "tool")[0] == 0
    finally:
        assert daemon.stop() == 0
    assert not daemon.socket.exists()
    yield Built(home=daemon.home, socket=daemon.socket, paths=Paths(daemon.home, daemon.socket, daemon.state), environ={**daemon.environ(), "LANG": "C.UTF-8"},
                project=project, plain_project=plain_project, app=app, plain=plain)
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def no_python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATH with a POSIX sh and nothing else: no python3, no provisionctl."""
    directory = tmp_path_factory.mktemp("bin")
    (directory / "sh").symlink_to("/bin/sh")
    assert shutil.which("python3", path=str(directory)) is None
    return directory


def cold_start(built: Built, path: Path, *argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "PROVISIOND_HOME": str(built.home)}  # like `env -i`: nothing else
    return subprocess.run([str(COLD_START), *argv], env=env, capture_output=True, text=True, timeout=WAIT, **kw)


# -- name activation in the store ---------------------------------------------------------------

def test_every_name_has_its_activation_in_the_store_without_secrets(built: Built) -> None:
    names = built.home / "activation" / "names"
    assert sorted(p.name for p in names.iterdir()) == ["app", "app-copy", "plain", "tool"]
    assert (names / "app" / "env").read_text() == f"env_key={built.app['env_key']}\nprefix={built.app['prefix']}\n"
    app = json.loads((names / "app" / "activate.json").read_text())
    assert app["set"]["APP_MODE"] == "prod" and app["set"]["CONDA_DEFAULT_ENV"] == "app"
    assert app["scripts"] and app["project"] is None
    copy = json.loads((names / "app-copy" / "activate.json").read_text())
    assert copy["set"]["APP_MODE"] == "prod" and copy["set"]["CONDA_DEFAULT_ENV"] == "app-copy"  # a clone keeps them
    plain = json.loads((names / "plain" / "activate.json").read_text())
    assert plain["set"]["PLAIN_VAR"] == "a b $HOME" and plain["scripts"] == []
    tool = json.loads((names / "tool" / "activate.json").read_text())  # a file env (`create -f`)
    assert tool["set"]["CONDA_DEFAULT_ENV"] == "tool" and tool["set"]["TOOL_A_HOME"].endswith("/share/tool-a")
    # .env values stay in the per-user state dir: nowhere in the store.
    assert not [p for p in built.home.rglob("*") if p.is_file() and b"s3cr3t" in p.read_bytes()]
    project = activation.project_activation_dir(built.paths, built.project.resolve())
    assert "s3cr3t-value" in (project / "activate.json").read_text()


def test_name_activation_is_rewritten_only_when_it_changes(built: Built) -> None:
    names = built.home / "activation" / "names"
    before = {p.name: p.stat().st_mtime_ns for p in (names / "plain").iterdir()}
    args = (built.paths, "plain", built.plain["env_key"], built.plain["prefix"])
    # ("plain" is a project's name: its store activation points at the project, for `activate NAME`.)
    assert not activation.write_name_activation(*args, (("PLAIN_VAR", "a b $HOME"),),
                                                project=str(built.plain_project))
    assert {p.name: p.stat().st_mtime_ns for p in (names / "plain").iterdir()} == before
    # A name that is not a file name gets no directory (and never reaches outside names/).
    for bad in ("a/b", "..", "."):
        assert activation.name_activation_dir(built.paths, bad) is None
        assert not activation.write_name_activation(built.paths, bad, *args[2:])
        activation.remove_name_activation(built.paths, bad)
    assert sorted(p.name for p in names.iterdir()) == ["app", "app-copy", "plain", "tool"]


def test_layout_constants_agree() -> None:
    assert (coldstart.NAMES_DIR, coldstart.NAME_TARGET) == (activation.NAMES_DIR, activation.NAME_TARGET)
    assert coldstart.MARKER == store.MARKER


def test_a_name_activation_follows_its_env_and_goes_with_the_name(daemon: Daemon, channel: Path,
                                                                  tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["libgreet"], name="short-lived")
    assert daemon.ctl("warm", str(project))[0] == 0
    names = daemon.home / "activation" / "names"
    first = (names / "short-lived" / "env").read_text()
    write_project(project, channel, ["hello"], name="short-lived")  # edited: a new env
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    view = json.loads(out)
    assert (names / "short-lived" / "env").read_text() == f"env_key={view['env_key']}\nprefix={view['prefix']}\n"
    assert first != f"env_key={view['env_key']}\nprefix={view['prefix']}\n"
    assert daemon.ctl("clone", "short-lived", "second")[0] == 0
    assert (names / "second" / "env").is_file()
    assert daemon.ctl("remove", "second")[0] == 0
    assert daemon.ctl("unwatch", "short-lived")[0] == 0
    assert sorted(p.name for p in names.iterdir()) == []


# -- provisionctl run ---------------------------------------------------------------------------

def test_run_with_the_daemon_stopped(built: Built) -> None:
    assert not built.socket.exists()
    hello = built.ctl("run", "app", "--", "hello")
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, f"Hello 2.0 from {built.app['prefix']}\n", "")
    probe = 'echo "$HELLO_ACTIVATED|$APP_MODE|$CONDA_DEFAULT_ENV|${SECRET_TOKEN-unset}|$CONDA_SHLVL|$HELLO_HOME"'
    by_name = built.ctl("run", "app", "--", "sh", "-c", probe)
    assert by_name.stdout == f"1|prod|app|unset|1|{built.app['prefix']}/share/hello\n", by_name.stderr
    # A path: the project's own activation, with its .env values (from any directory inside it).
    (built.project / "src").mkdir(exist_ok=True)
    by_path = built.ctl("run", str(built.project / "src"), "--", "sh", "-c", probe)
    assert by_path.stdout == f"1|prod|app|s3cr3t-value|1|{built.app['prefix']}/share/hello\n", by_path.stderr


TARGETS = ["app", "plain", "app-dir", "plain-dir"]  # plain-dir: exec'd directly, the others through /bin/sh


@pytest.mark.parametrize("which", TARGETS)
def test_run_passes_exit_codes(built: Built, which: str) -> None:
    assert built.ctl("run", built.target(which), "--", "sh", "-c", "exit 7").returncode == 7
    assert built.ctl("run", built.target(which), "--", "false").returncode == 1


@pytest.mark.parametrize("which", TARGETS)
def test_run_passes_signals(built: Built, which: str) -> None:
    name = built.target(which)
    assert built.ctl("run", name, "--", "sh", "-c", "kill -TERM $$").returncode == -signal.SIGTERM
    # Python ignores SIGPIPE, and an ignored signal would stay ignored across exec.
    assert built.ctl("run", name, "--", "sh", "-c", "kill -PIPE $$").returncode == -signal.SIGPIPE
    argv = [sys.executable, "-m", "provisiond.ctl", "--home", str(built.home), "run", name, "--",
            "sh", "-c", "echo $$; exec sleep 60"]
    with subprocess.Popen(argv, env=built.environ, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert int(proc.stdout.readline()) == proc.pid  # exec all the way: the command is the process
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT) == -signal.SIGTERM
        finally:
            proc.kill()


@pytest.mark.parametrize("by", ["name", "path"])
def test_direct_exec_and_the_shell_agree(built: Built, by: str) -> None:
    """Without activate.d scripts cli.main builds the environment in Python: it equals sourcing activate.sh."""
    base = {**{k: v for k, v in built.environ.items() if k.startswith(("PROVISIOND_", "LANG"))},
            "PATH": "/usr/bin:/bin", "HOME": "/nowhere", "CONDA_SHLVL": "2", "PLAIN_VAR": "old", "KEEP": "1"}
    if by == "name":  # without `--`: not the fast path
        direct = built.ctl("run", "plain", "env", "-0", env=base)
        script = built.home / "activation" / "names" / "plain" / "activate.sh"
    else:
        direct = built.ctl("run", str(built.plain_project), "env", "-0", env=base)  # without `--`: not the fast path
        script = activation.project_activation_dir(built.paths, built.plain_project.resolve()) / "activate.sh"
    shell = subprocess.run(["/bin/sh", "-c", '. "$1"; exec env -0', "sh", str(script)], env=base,
                           capture_output=True, text=True, timeout=WAIT)

    def parse(out: str) -> dict[str, str]:
        env = dict(item.split("=", 1) for item in out.split("\0") if item)
        env.pop("PWD", None)  # dash exports it
        env["_PROVISIOND_VARS"] = " ".join(sorted(env["_PROVISIOND_VARS"].split()))
        return env

    assert direct.returncode == 0, direct.stderr
    env = parse(direct.stdout)
    assert "PWD" not in direct.stdout  # no shell in between
    assert env == parse(shell.stdout)
    assert env["PATH"] == f"{built.plain['prefix']}/bin:/usr/bin:/bin" and env["CONDA_SHLVL"] == "3"
    assert env["PLAIN_VAR"] == "a b $HOME" and env["_PROVISIOND_OLD_PLAIN_VAR"] == "old" and env["KEEP"] == "1"


def test_run_of_what_is_not_there_is_one_line(built: Built) -> None:
    for which in TARGETS:  # "provisionctl: 1: exec: no-such-command: not found" when /bin/sh execs it
        missing = built.ctl("run", built.target(which), "--", "no-such-command")
        assert missing.returncode == 127 and missing.stderr.count("\n") == 1, missing.stderr
        assert missing.stderr.startswith("provisionctl: ") and "no-such-command" in missing.stderr
    down = built.ctl("run", "nope", "--", "true")  # not in the store, and no daemon to ask
    assert down.returncode == os.EX_UNAVAILABLE and "provisiond is not running" in down.stderr
    assert built.ctl("run", "plain").returncode == os.EX_USAGE


@pytest.mark.parametrize(("which", "path"), [("app", "provisiond.config.locations"), ("plain-dir", "provisiond.config.locations")])
def test_run_imports_nothing_heavy(built: Built, which: str, path: str) -> None:
    argv = [sys.executable, "-X", "importtime", "-m", "provisiond.ctl", "--home", str(built.home),
            "run", built.target(which), "--", "true"]
    proc = subprocess.run(argv, env=built.environ, capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert path in imported
    # The fast path, for a name (the store's activation) and a project (the state dir's): not even
    # argparse or json.
    assert not {"provisiond.cli.commands", "argparse", "json"} & imported
    assert not {m for m in imported if m.split(".")[0] in ("aiohttp", "ruamel", "rattler", "sqlite3")}


def test_run_asks_the_daemon_when_not_ready(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "fresh", channel, ["hello"], name="fresh")
    env = {**daemon.environ(), "LANG": "C.UTF-8"}
    argv = [sys.executable, "-m", "provisiond.ctl", "--home", str(daemon.home), "--socket", str(daemon.socket), "run"]
    first = subprocess.run([*argv, str(project), "--", "hello"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert first.returncode == 0 and first.stdout.startswith("Hello 2.0 from "), first.stderr
    unknown = subprocess.run([*argv, "nope", "--", "true"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert unknown.returncode == 127 and unknown.stderr == "provisionctl: no env named 'nope' (see: provisionctl list)\n"


def test_run_holds_a_lease_while_the_command_runs(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    code, out, err = daemon.ctl("warm", str(write_project(tmp_path / "held", channel, ["hello"], name="held")), "--json")
    assert code == 0, err
    env = json.loads(out)
    argv = [sys.executable, "-m", "provisiond.ctl", "--home", str(daemon.home), "run", "held", "--",
            "sh", "-c", "echo ready; exec sleep 60"]
    with subprocess.Popen(argv, env=daemon.environ(), stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            assert (daemon.home / "leases" / f"{env['env_key']}.{proc.pid}").exists()
            assert daemon.ctl("unwatch", "held")[0] == 0
            code, out, err = daemon.ctl("gc", "--older-than", "0", "--json")
            assert code == 0, err
            report = json.loads(out)
            assert report["envs"] == [] and report["kept"] == [{"env_key": env["env_key"], "prefix": env["prefix"],
                                                                "reason": "leased"}]
            assert Path(env["prefix"], "bin", "hello").exists()
            proc.terminate()
            assert proc.wait(timeout=WAIT) == -signal.SIGTERM
        finally:
            proc.kill()
    code, out, err = daemon.ctl("gc", "--older-than", "0", "--json")  # the lease lapsed with the command
    assert code == 0 and [e["env_key"] for e in json.loads(out)["envs"]] == [env["env_key"]], err
    assert not Path(env["prefix"]).exists()


# -- scripts/cold-start -------------------------------------------------------------------------

def test_cold_start_without_daemon_or_python(built: Built, no_python_bin: Path) -> None:
    hello = cold_start(built, no_python_bin, "app", "--", "hello")
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, f"Hello 2.0 from {built.app['prefix']}\n", "")
    probe = cold_start(built, no_python_bin, "app", "--", "sh", "-c",
                       'echo "$HELLO_ACTIVATED|$APP_MODE|$CONDA_DEFAULT_ENV|${SECRET_TOKEN-unset}|$$"')
    assert probe.returncode == 0, probe.stderr
    activated, mode, name, secret, pid = probe.stdout.strip().split("|")
    assert (activated, mode, name, secret) == ("1", "prod", "app", "unset")
    # The lease names the pid that became the command: it lapses when the command ends.
    assert (built.home / "leases" / f"{built.app['env_key']}.{pid}").exists()
    # Its own variables do not leak into the command's environment.
    env = cold_start(built, no_python_bin, "plain", "sh", "-c", "set")
    assert "__cs_" not in env.stdout and "PLAIN_VAR='a b $HOME'" in env.stdout


def test_cold_start_passes_exit_codes_and_signals(built: Built, no_python_bin: Path) -> None:
    assert cold_start(built, no_python_bin, "app", "--", "sh", "-c", "exit 7").returncode == 7
    assert cold_start(built, no_python_bin, "app", "--", "sh", "-c", "kill -TERM $$").returncode == -signal.SIGTERM


def test_cold_start_errors_are_one_line(built: Built, no_python_bin: Path) -> None:
    missing = cold_start(built, no_python_bin, "nope", "--", "true")
    assert missing.returncode == 127
    assert missing.stderr.startswith("cold-start: no env named 'nope' in ") and missing.stderr.count("\n") == 1
    usage = cold_start(built, no_python_bin, "app")
    assert usage.returncode == 64 and usage.stderr.count("\n") == 1
    not_found = cold_start(built, no_python_bin, "app", "--", "no-such-command")
    assert not_found.returncode == 127 and not_found.stderr.count("\n") == 1


def test_cold_start_finds_the_store_it_sits_in(built: Built, no_python_bin: Path, tmp_path: Path) -> None:
    """Installed as <home>/bin/cold-start (as bundles do), it needs no PROVISIOND_HOME."""
    (built.home / "bin").mkdir(exist_ok=True)
    shutil.copy(COLD_START, built.home / "bin" / "cold-start")
    try:
        proc = subprocess.run([str(built.home / "bin" / "cold-start"), "app", "--", "hello"],
                              env={"PATH": str(no_python_bin)}, capture_output=True, text=True, timeout=WAIT)
        assert (proc.returncode, proc.stdout) == (0, f"Hello 2.0 from {built.app['prefix']}\n"), proc.stderr
    finally:
        shutil.rmtree(built.home / "bin")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck() -> None:
    scripts = [COLD_START, REPO / "examples" / "container" / "build-env"]
    proc = subprocess.run(["shellcheck", "-s", "sh", *map(str, scripts)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
