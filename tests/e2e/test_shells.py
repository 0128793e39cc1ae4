"""Real interactive bash, zsh and fish on a pty, with the hook printed by provisionctl, over real envs.

Every check waits for a marker the shell prints after a prompt (so the hook has run); values are
read from files the shell writes with builtins, so terminal noise never matters.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisiond.config.settings import Paths
from provisiond.domain.spec import load_spec
from provisiond.shell.activation import project_activation_dir, write_project_activation
from provisiond.testing.channel import Pkg, build_channel
from tests.conftest import Daemon, write_project
from tests.shell.shell_probe import dump, environ, read_values

ARGV = {"bash": ["bash", "--norc", "--noprofile", "-i"], "zsh": ["zsh", "-f", "-i"],
        "fish": ["fish", "--no-config", "-i"]}
# fish's default prompt runs git; a plain one keeps the session free of processes we did not start.
PRELUDE = {"bash": ":", "zsh": ":", "fish": "function fish_prompt; printf '> '; end"}
SECRET = "it's \"q\" $HOME `x` \\ ünï 😀\nline 2"
WAIT = 60  # seconds: a hang guard, never a timing assertion


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # job-control shells (fish) need a controlling terminal


class Shell:
    """One interactive shell on a pty; ``run`` returns once the prompt after the command was shown."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        try:
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                         start_new_session=True, preexec_fn=_controlling_tty)
        finally:
            os.close(slave)
        self.transcript = b""
        self.count = 0

    def run(self, line: str) -> None:
        self.count += 1
        marker = f"@@{self.count}@@".encode()
        # The marker is printed by a second command line, after the prompt (and the hook) that follow `line`.
        os.write(self.master, f"{line}\nprintf '@@%s@@\\n' {self.count}\n".encode())
        deadline = time.monotonic() + WAIT
        while marker not in self.transcript:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no prompt after {line!r}:\n{self.text()[-3000:]}")
            try:
                self.transcript += os.read(self.master, 65536)
            except OSError:  # EIO: the shell is gone
                raise AssertionError(f"the shell exited after {line!r}:\n{self.text()[-3000:]}") from None

    def text(self) -> str:
        return self.transcript.decode(errors="replace")

    def close(self) -> None:
        try:
            os.write(self.master, b"exit\n")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.master)


@dataclass
class World:
    daemon: Daemon
    paths: Paths
    root: Path
    hooks: dict[str, Path] = field(default_factory=dict)
    ctl: list[str] = field(default_factory=list)
    prefixes: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOME": str(self.root / "home"), "PATH": "/usr/bin:/bin", "TERM": "dumb", "LANG": "C.UTF-8",
                "PROVISIOND_STATE": str(self.paths.state), "PROVISIOND_CONFIG": str(self.root / "none.toml"),
                **extra}

    def warm(self, project: Path) -> dict[str, str]:
        """Build a project's env and write its activation (what the provisioner does after each warm)."""
        code, out, err = self.daemon.ctl("warm", str(project), "--json")
        assert code == 0, err
        view = json.loads(out)
        variables = load_spec(project / "environment.yml").variables
        write_project_activation(self.paths, view["source"], view["name"], view["env_key"], view["prefix"], variables)
        self.prefixes[view["name"]] = view["prefix"]
        return view

    def shell(self, kind: str, cwd: Path | None = None, **extra: str) -> Shell:
        if shutil.which(kind) is None:
            pytest.skip(f"{kind} is not installed (apt-get install -y {kind})")
        sh = Shell(ARGV[kind], self.env(**extra), cwd or self.root)
        sh.run(PRELUDE[kind])
        return sh


@pytest.fixture(scope="module")
def world(channel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A daemon, and projects with spaces in their paths: outer (hello), outer/inner (tool-a), swap."""
    root = tmp_path_factory.mktemp("shells")
    (root / "home").mkdir()
    short = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    daemon = Daemon(home=root / "store", socket=short / "d.sock").start()
    try:
        w = World(daemon, Paths(home=daemon.home, socket=daemon.socket, state=daemon.state), root)
        outer = write_project(root / "outer proj", channel, ["hello"], name="outer",
                              extra="variables:\n  MY_VAR: from the yml $NOT\n")
        escaped = SECRET.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        (outer / ".env").write_text(f'# secrets\nSECRET="{escaped}"\nexport EMPTY_BEFORE=now set\n')
        (outer / "sub dir").mkdir()
        write_project(outer / "inner", channel, ["tool-a"], name="inner")
        write_project(root / "swap", channel, ["hello"], name="swap")
        (root / "plain").mkdir()
        for project in (outer, outer / "inner", root / "swap"):
            w.warm(project)
        w.ctl = [sys.executable, "-m", "provisiond.cli", "--socket", str(daemon.socket)]
        for kind in ARGV:
            out = subprocess.run([*w.ctl, "hook", kind], env={**os.environ, **w.env()}, capture_output=True,
                                 text=True, check=True).stdout
            w.hooks[kind] = root / f"hook.{kind}"
            w.hooks[kind].write_text(out)
        yield w
    finally:
        assert daemon.stop() == 0, daemon.log.read_text() if daemon.log else ""
        shutil.rmtree(short, ignore_errors=True)


def check(sh: Shell, kind: str, tmp: Path, names: list[str]) -> dict[str, str]:
    out = tmp / f"values-{sh.count}"
    sh.run(dump(kind, names, out))
    return read_values(out, names)


SHELLS = pytest.mark.parametrize("kind", list(ARGV))
NAMES = ["CONDA_DEFAULT_ENV", "CONDA_PREFIX", "CONDA_SHLVL", "CONDA_PROMPT_MODIFIER", "HELLO_ACTIVATED",
         "HELLO_HOME", "SECRET", "MY_VAR", "EMPTY_BEFORE", "PATH"]


@SHELLS
def test_entering_activates_and_leaving_restores_every_byte(world: World, tmp_path: Path, kind: str) -> None:
    sh = world.shell(kind, HELLO_HOME="mine before", EMPTY_BEFORE="")
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        sh.run(f"/usr/bin/env -0 > '{tmp_path}/before'")
        sh.run("cd 'outer proj'")
        active = check(sh, kind, tmp_path, NAMES)
        sh.run(f"hello > '{tmp_path}/hello.out'")
        sh.run("cd ..")
        sh.run(f"/usr/bin/env -0 > '{tmp_path}/after'")
    finally:
        sh.close()
    prefix = world.prefixes["outer"]
    assert active == {"CONDA_DEFAULT_ENV": "outer", "CONDA_PREFIX": prefix, "CONDA_SHLVL": "1",
                      "CONDA_PROMPT_MODIFIER": "(outer) ", "HELLO_ACTIVATED": "1",
                      "HELLO_HOME": f"{prefix}/share/hello", "SECRET": SECRET, "MY_VAR": "from the yml $NOT",
                      "EMPTY_BEFORE": "now set", "PATH": f"{prefix}/bin:/usr/bin:/bin"}
    assert (tmp_path / "hello.out").read_text() == f"Hello 2.0 from {prefix}\n"
    assert environ(tmp_path / "after") == environ(tmp_path / "before")
    assert "provisiond:" not in sh.text()  # a ready project says nothing


@SHELLS
def test_nested_projects_nearest_wins(world: World, tmp_path: Path, kind: str) -> None:
    names = ["CONDA_DEFAULT_ENV", "CONDA_SHLVL", "PATH"]
    seen = {}
    sh = world.shell(kind)
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        for step in ("'outer proj'", "inner", "'../sub dir'", "/", f"'{world.root}/outer proj/inner'", "'..'"):
            sh.run(f"cd {step}")
            seen[step] = check(sh, kind, tmp_path, names)
    finally:
        sh.close()
    outer, inner = world.prefixes["outer"], world.prefixes["inner"]
    assert seen["'outer proj'"] == {"CONDA_DEFAULT_ENV": "outer", "CONDA_SHLVL": "1", "PATH": f"{outer}/bin:/usr/bin:/bin"}
    assert seen["inner"] == {"CONDA_DEFAULT_ENV": "inner", "CONDA_SHLVL": "1", "PATH": f"{inner}/bin:/usr/bin:/bin"}
    assert seen["'../sub dir'"] == seen["'outer proj'"]
    assert seen["/"] == {"CONDA_DEFAULT_ENV": "<unset>", "CONDA_SHLVL": "<unset>", "PATH": "/usr/bin:/bin"}
    assert seen[f"'{world.root}/outer proj/inner'"] == seen["inner"]
    assert seen["'..'"] == seen["'outer proj'"]


@SHELLS
def test_a_new_activation_is_picked_up_at_the_next_prompt(world: World, tmp_path: Path, kind: str) -> None:
    project = world.root / "swap"
    (project / ".env").write_text("TOKEN=first\n")
    world.warm(project)
    sh = world.shell(kind, cwd=project)
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        first = check(sh, kind, tmp_path, ["TOKEN", "_PROVISIOND_GEN"])
        (project / ".env").write_text("TOKEN=second\n")
        world.warm(project)  # the daemon rewrites activation after a rebuild or a .env change
        sh.run(":")
        second = check(sh, kind, tmp_path, ["TOKEN", "_PROVISIOND_GEN", "CONDA_SHLVL"])
    finally:
        sh.close()
    stamp = (project_activation_dir(world.paths, project) / "stamp").read_text().strip()
    assert first["TOKEN"] == "first" and second["TOKEN"] == "second"
    assert second["_PROVISIOND_GEN"] == stamp != first["_PROVISIOND_GEN"]
    assert second["CONDA_SHLVL"] == "1"  # swapped, not stacked


@SHELLS
def test_the_fast_path_starts_no_process(world: World, tmp_path: Path, kind: str) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install -y strace)")
    trace = tmp_path / "trace"
    for name in ("start", "end"):
        (tmp_path / name).touch()
    argv = ["strace", "-f", "-qq", "-e", "trace=execve,fork,vfork,clone,clone3,openat", "-o", str(trace), *ARGV[kind]]
    sh = Shell(argv, world.env(), world.root)
    touch = "true" if kind == "fish" else ":"
    try:
        sh.run(PRELUDE[kind])
        sh.run(f"source '{world.hooks[kind]}'")
        sh.run(f"{touch} < '{tmp_path}/start'")
        # Enter, switch, stay, leave: activation and deactivation run at these prompts.
        # (No `cd -`: fish's prevd runs `seq`.)
        for line in ("cd 'outer proj'", ":", "cd inner", "cd '../sub dir'", ":", "cd /", f"cd '{world.root}/outer proj'",
                     ":", "cd /"):
            sh.run(line)
        sh.run(f"{touch} < '{tmp_path}/end'")
        sh.run(dump(kind, ["CONDA_DEFAULT_ENV"], tmp_path / "last"))
    finally:
        sh.close()
    text = trace.read_text()
    window = text.split(f'"{tmp_path}/start"', 1)[1].split(f'"{tmp_path}/end"', 1)[0]
    assert "activate.d/hello" in window  # the hook did activate in this window...
    # ...without a process: fish's own worker threads (CLONE_THREAD) are not processes.
    spawned = [line for line in window.splitlines()
               if re.search(r"\b(execve|clone3?|v?fork)\(", line) and "CLONE_THREAD" not in line]
    assert spawned == []
    assert read_values(tmp_path / "last", ["CONDA_DEFAULT_ENV"]) == {"CONDA_DEFAULT_ENV": "<unset>"}


@SHELLS
def test_a_project_reached_through_a_symlink(world: World, tmp_path: Path, kind: str) -> None:
    link = tmp_path / "shortcut"
    link.symlink_to(world.root / "outer proj")
    sh = world.shell(kind)
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        sh.run(f"cd '{link}/sub dir'")
        inside = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "_PROVISIOND_PROJECT"])
        sh.run(":")
        sh.run("cd ..")
        still = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "CONDA_SHLVL"])
    finally:
        sh.close()
    # The daemon knows the project by its real path; the hook resolves the link to find it.
    assert inside == {"CONDA_DEFAULT_ENV": "outer", "_PROVISIOND_PROJECT": str(world.root / "outer proj")}
    assert still == {"CONDA_DEFAULT_ENV": "outer", "CONDA_SHLVL": "1"}
    assert "provisiond:" not in sh.text()


def test_the_hook_works_with_an_empty_path(world: World, tmp_path: Path) -> None:
    sh = world.shell("bash")
    try:
        sh.run(f"source '{world.hooks['bash']}'")
        sh.run("PATH=")  # any command the hook ran would now fail: "command not found"
        sh.run("cd 'outer proj'")
        active = check(sh, "bash", tmp_path, ["HELLO_ACTIVATED", "CONDA_DEFAULT_ENV", "PATH"])
        sh.run("cd ..")
        left = check(sh, "bash", tmp_path, ["HELLO_ACTIVATED", "PATH"])
    finally:
        sh.close()
    assert active == {"HELLO_ACTIVATED": "1", "CONDA_DEFAULT_ENV": "outer", "PATH": f"{world.prefixes['outer']}/bin"}
    assert left == {"HELLO_ACTIVATED": "<unset>", "PATH": ""}
    assert "command not found" not in sh.text()


@pytest.mark.parametrize("kind, strict", [("bash", "set -eu"), ("zsh", "setopt nounset errexit")])
def test_strict_shells_survive(world: World, tmp_path: Path, kind: str, strict: str) -> None:
    sh = world.shell(kind)
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        sh.run(strict)
        sh.run("cd 'outer proj'")
        sh.run("[[ -f /nonexistent ]] && echo never")  # $? is 1 at the prompt, without tripping errexit
        active = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "SECRET"])
        sh.run("cd /")
        left = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "SECRET"])
        sh.run(f"cd '{world.root}/plain'")  # a dir with no project: the walk ends at / without errors
    finally:
        sh.close()
    assert active == {"CONDA_DEFAULT_ENV": "outer", "SECRET": SECRET}
    assert left == {"CONDA_DEFAULT_ENV": "<unset>", "SECRET": "<unset>"}
    assert "unbound" not in sh.text() and "parameter not set" not in sh.text()


@pytest.mark.parametrize("setup", [
    "PROMPT_COMMAND='__seen=\"${__seen-}$?,\"; __runs=$((${__runs:-0}+1))'",
    "PROMPT_COMMAND=('__seen=\"${__seen-}$?,\"' '__runs=$((${__runs:-0}+1))')",
], ids=["string", "array"])
def test_bash_keeps_an_existing_prompt_command(world: World, tmp_path: Path, setup: str) -> None:
    sh = world.shell("bash")
    try:
        sh.run(setup)
        sh.run(f'eval "$({" ".join(world.ctl)} hook bash)"')  # the documented install, twice: added once
        sh.run(f'eval "$({" ".join(world.ctl)} hook bash)"')
        sh.run("cd 'outer proj'")
        sh.run("false")
        values = check(sh, "bash", tmp_path, ["__seen", "__runs", "CONDA_DEFAULT_ENV"])
        sh.run(f"printf '%s\\n' \"${{PROMPT_COMMAND[@]}}\" > '{tmp_path}/pc'")
    finally:
        sh.close()
    assert values["CONDA_DEFAULT_ENV"] == "outer" and int(values["__runs"]) >= 6
    assert "1," in values["__seen"]  # `false` set $? to 1, and the hook handed it on to the next command
    assert (tmp_path / "pc").read_text().count("__provisiond_hook") == 1


def test_zsh_keeps_existing_precmd_hooks(world: World, tmp_path: Path) -> None:
    sh = world.shell("zsh")
    try:
        sh.run("precmd() { __mine=$((${__mine:-0}+1)) }; __other() { __theirs=yes }; precmd_functions+=(__other)")
        sh.run(f"source '{world.hooks['zsh']}'")
        sh.run("cd 'outer proj'")
        values = check(sh, "zsh", tmp_path, ["__theirs", "CONDA_DEFAULT_ENV"])
        mine = check(sh, "zsh", tmp_path, ["__mine"])
    finally:
        sh.close()
    assert values == {"__theirs": "yes", "CONDA_DEFAULT_ENV": "outer"}
    assert int(mine["__mine"]) >= 4


@pytest.fixture(scope="module")
def evil_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A channel whose package's activate.d scripts leave a marker in $PVD_MARKERS when sourced."""
    files = {"etc/conda/activate.d/evil.sh": 'touch "$PVD_MARKERS/activate-d"\n',
             "etc/conda/activate.d/evil.fish": 'touch "$PVD_MARKERS/activate-d"\n'}
    return build_channel(tmp_path_factory.mktemp("evil-channel"), [Pkg("evil", "1.0", files=files)])


def attack_projects(world: World, channel: Path, evil: Path, kind: str, markers: Path) -> dict[str, Path]:
    """The three ways a cloned repository ran code at `cd` before the trust gate (issue #9)."""
    root = world.root / f"attacks-{kind}"
    prompt = write_project(root / "prompt", channel, ["hello"], name=f"prompt-{kind}", extra=(
        "variables:\n"
        f"  PROMPT_COMMAND: 'touch {markers}/prompt-command'\n"
        f"  PS1: '$(touch {markers}/ps1)> '\n"
        f"  BASH_ENV: '{markers}/bash-env'\n"
        f"  ZDOTDIR: '{markers}'\n"
        "  HARMLESS: 'yes'\n"))
    pip = write_project(root / "pip", channel, ["hello"], name=f"pip-{kind}", extra='  - pip: ["-e ."]\n')
    (pip / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                        'backend-path = ["."]\n[project]\nname = "x"\nversion = "1"\n')
    (pip / "backend.py").write_text(f"open({str(markers / 'backend')!r}, 'w').close()\n")
    evil_project = write_project(root / "channel", evil, ["evil"], name=f"evil-{kind}")
    return {"prompt": prompt, "pip": pip, "channel": evil_project}


def names_and_builds(daemon: Daemon) -> tuple[set[str], set[str]]:
    names = {e["name"] for e in daemon.client.get("/v1/envs")["envs"]}
    builds = {b["name"] for b in daemon.client.get("/v1/builds")["builds"]}
    return names, builds


@SHELLS
def test_a_cloned_project_runs_nothing_until_allowed(world: World, channel: Path, evil_channel: Path,
                                                     tmp_path: Path, kind: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    projects = attack_projects(world, channel, evil_channel, kind, markers)
    ctl = " ".join(shlex.quote(w) for w in world.ctl)
    sh = world.shell(kind, PVD_MARKERS=str(markers))
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        for project in projects.values():  # in, out, in again, a few prompts each
            sh.run(f"cd '{project}'")
            sh.run(":")
            sh.run("cd /")
            sh.run(f"cd '{project}'")
            sh.run(":")
        blocked = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "HARMLESS"])
        names, builds = names_and_builds(world.daemon)
        before = sorted(p.name for p in markers.iterdir())

        # Consent: `provisionctl allow` in the project, then it activates at a prompt once built.
        sh.run(f"cd '{projects['prompt']}' && {ctl} allow")
        wait_until_ready(world.daemon, f"prompt-{kind}")
        sh.run(":")
        prompt_env = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "HARMLESS", "PROMPT_COMMAND", "BASH_ENV"])
        sh.run(f"cd '{projects['channel']}' && {ctl} allow")
        wait_until_ready(world.daemon, f"evil-{kind}")
        sh.run(":")
        evil_env = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV"])
        consented = sorted(p.name for p in markers.iterdir())

        # Anyone's edit that adds a variable (a `git pull`) blocks it again, and deactivates it.
        with (projects["channel"] / "environment.yml").open("a") as f:
            f.write("variables:\n  NEW_ONE: added\n")
        deadline = time.monotonic() + WAIT
        while world.daemon.client.get(f"/v1/envs/evil-{kind}")["status"] != "blocked":
            assert time.monotonic() < deadline, "the edit did not block the project"
            time.sleep(0.05)
        sh.run(":")
        sh.run(":")
        reblocked = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "NEW_ONE"])
    finally:
        sh.close()
    text = sh.text()
    assert before == [], "nothing from the projects ran before `allow`"
    for name in (f"prompt-{kind}", f"pip-{kind}", f"evil-{kind}"):
        assert name not in names and name not in builds, "no watch, no build before `allow`"
    assert blocked == {"CONDA_DEFAULT_ENV": "<unset>", "HARMLESS": "<unset>"}
    for project in projects.values():
        line = f"provisiond: {project} is blocked (its environment.yml is not allowed yet); " \
               "run 'provisionctl allow' to trust it"
        assert text.count(line) == 1, text[-3000:]
    # Allowed: the env activates; shell-control variables are still never exported.
    assert "touch" not in prompt_env.pop("PROMPT_COMMAND")  # in bash, the hook's own
    assert prompt_env == {"CONDA_DEFAULT_ENV": f"prompt-{kind}", "HARMLESS": "yes", "BASH_ENV": "<unset>"}
    assert evil_env == {"CONDA_DEFAULT_ENV": f"evil-{kind}"}
    assert consented == ["activate-d"]  # what the user allowed ran; the variables never did
    assert reblocked == {"CONDA_DEFAULT_ENV": "<unset>", "NEW_ONE": "<unset>"}
    changed = f"provisiond: {projects['channel']} is blocked (its environment.yml changed: variables:); " \
              "run 'provisionctl allow' to trust it"
    assert text.count(changed) == 1, text[-3000:]


@SHELLS
def test_the_hook_says_once_why_a_project_has_no_new_env(world: World, channel: Path, tmp_path: Path,
                                                         kind: str) -> None:
    project = write_project(world.root / f"failing-{kind}", channel, ["hello"], name=f"failing-{kind}")
    assert world.daemon.ctl("watch", str(project))[0] == 0
    wait_until_ready(world.daemon, f"failing-{kind}")
    dead = tmp_path / "dead"
    write_project(dead, channel, ["hello"])
    sh = world.shell(kind, cwd=project)
    try:
        sh.run(f"source '{world.hooks[kind]}'")
        (project / "environment.yml").write_text("name: x\ndependencies: [\n")  # broken by an edit
        world.daemon.wait_for(f"failing-{kind}", lambda v: v["status"] == "failed")
        for _ in range(3):
            sh.run(":")
        broken = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV"])
        write_project(project, channel, ["hello", "tool-a"], name=f"failing-{kind}")  # fixed, in place
        world.daemon.wait_for(f"failing-{kind}", lambda v: v["status"] == "ready" and "tool-a" in
                              json.dumps(world.daemon.client.get(f"/v1/envs/failing-{kind}/lock")))
        sh.run(":")
        fixed = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV"])
        sh.run(f"{shlex.quote(sys.executable)} -c 'import shutil; print(shutil.which(\"tool-a\"))' > '{tmp_path}/which'")
    finally:
        sh.close()
    text = sh.text()
    line = (f"provisiond: failing-{kind}: {project}/environment.yml:3:1: expected the node content, but found "
            f"'<stream end>' (the previous env stays active); see: provisionctl show failing-{kind}")
    assert text.count(line) == 1, text[-2000:]
    assert broken == fixed == {"CONDA_DEFAULT_ENV": f"failing-{kind}"}
    assert (tmp_path / "which").read_text().strip().endswith("/bin/tool-a")  # the fixed env, without a cd

    # The daemon is down: entering a project with no env says so, once per visit.
    hook = tmp_path / f"hook.{kind}"
    ctl = [sys.executable, "-m", "provisiond.cli", "--socket", str(tmp_path / "nobody.sock")]
    hook.write_text(subprocess.run([*ctl, "hook", kind], env={**os.environ, **world.env()}, capture_output=True,
                                   text=True, check=True).stdout)
    sh = world.shell(kind)
    try:
        sh.run(f"source '{hook}'")
        sh.run(f"cd '{dead}'")
        sh.run(":")
    finally:
        sh.close()
    assert sh.text().count(f"provisiond: the daemon is not running (no answer on {tmp_path}/nobody.sock)") == 1


def wait_until_ready(daemon: Daemon, name: str) -> dict[str, str]:
    """Poll the daemon until the background `provisionctl watch` has registered and built ``name``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        code, out, _ = daemon.ctl("show", name, "--json")
        if code == 0 and json.loads(out)["status"] == "ready":
            return dict(json.loads(out))
        time.sleep(0.05)
    raise AssertionError(f"{name} was not registered and built in {WAIT}s:\n{daemon.ctl('list')[1]}")


@SHELLS
def test_provisionctl_activate_and_deactivate_by_hand(world: World, tmp_path: Path, kind: str) -> None:
    ctl = " ".join(world.ctl)
    if kind == "fish":
        activate, deactivate = f"{ctl} activate outer --shell fish | source", f"{ctl} deactivate --shell fish | source"
    else:
        activate, deactivate = (f'eval "$({ctl} activate outer --shell {kind})"',
                                f'eval "$({ctl} deactivate --shell {kind})"')
    sh = world.shell(kind, cwd=world.root / "plain", HELLO_HOME="mine")
    try:
        sh.run(f"/usr/bin/env -0 > '{tmp_path}/before'")
        sh.run(activate)
        active = check(sh, kind, tmp_path, ["CONDA_DEFAULT_ENV", "SECRET", "HELLO_ACTIVATED", "HELLO_HOME"])
        sh.run(deactivate)
        sh.run(f"/usr/bin/env -0 > '{tmp_path}/after'")
    finally:
        sh.close()
    prefix = world.prefixes["outer"]
    assert active == {"CONDA_DEFAULT_ENV": "outer", "SECRET": SECRET, "HELLO_ACTIVATED": "1",
                      "HELLO_HOME": f"{prefix}/share/hello"}
    assert environ(tmp_path / "after") == environ(tmp_path / "before")


def test_shellcheck_passes_on_the_bash_and_sh_scripts(world: World, tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    outer = project_activation_dir(world.paths, world.root / "outer proj")
    for name, text in (("deactivate.sh", "sh"), ("deactivate.bash", "bash")):
        (tmp_path / name).write_text(subprocess.run([*world.ctl, "deactivate", "--shell", text], check=True,
                                                    capture_output=True, text=True).stdout)
    for dialect, files in (("bash", [world.hooks["bash"], outer / "activate.bash", tmp_path / "deactivate.bash"]),
                           ("sh", [outer / "activate.sh", tmp_path / "deactivate.sh"])):
        result = subprocess.run(["shellcheck", "-s", dialect, *map(str, files)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
