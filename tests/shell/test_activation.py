"""Activation: facts of real prefixes, rendering, quoting, exact restore, private files, the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisiond.cli import commands as cli
from provisiond.config.settings import Paths
from provisiond.shell import activation
from provisiond.shell.activation import Activation
from provisiond.shell.dotenv import parse_dotenv
from tests.conftest import Daemon, write_project
from tests.shell.shell_probe import dump, environ, read_values

SHELL_ARGV = {"bash": ["bash", "--norc", "--noprofile", "-c"], "zsh": ["zsh", "-f", "-c"], "sh": ["sh", "-c"],
              "fish": ["fish", "--no-config", "-c"]}
NASTY = {
    "Q_SPACES": "two  spaces\tand a tab",
    "Q_DOLLAR": "$HOME ${HOME} $(touch pwned) `touch pwned` $((1+1)) $",
    "Q_QUOTES": "it's \"quoted\" '' \\' \\\\ \\n",
    "Q_NEWLINES": "line1\nline2\n",
    "Q_UNICODE": "ünïcödé 😀 ✓",
    "Q_EMPTY": "",
    "Q_GLOB": "* ? [a] ~ ~root {a,b}",
    "Q_BACKSLASH_END": "ends with \\",
    "Q_INJECT": "'; touch pwned; echo '",
}


@dataclass
class Built:
    daemon: Daemon
    paths: Paths
    env_key: str
    prefix: Path
    project: Path


@pytest.fixture(scope="module")
def built(channel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One real env (hello 2.0 + libgreet) built by a real daemon, shared by this module's tests."""
    root = tmp_path_factory.mktemp("activation")
    short = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    daemon = Daemon(home=root / "home", socket=short / "d.sock").start()
    try:
        project = write_project(root / "hello-project", channel, ["hello"], name="hello-env")
        code, out, err = daemon.ctl("warm", str(project), "--json")
        assert code == 0, err
        view = json.loads(out)
        paths = Paths(home=daemon.home, socket=daemon.socket, state=daemon.state)
        yield Built(daemon, paths, view["env_key"], Path(view["prefix"]), project)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text() if daemon.log else ""
        shutil.rmtree(short, ignore_errors=True)


def need(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (apt-get install -y {shell})")


def run_shell(shell: str, script: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    need(shell)
    base = {"HOME": str(cwd), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run([*SHELL_ARGV[shell], script], cwd=cwd, env=env or base, capture_output=True,
                          text=True, timeout=30, check=True)


def fake_prefix(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "conda-meta").mkdir(parents=True, exist_ok=True)
    return root


# -- env level ---------------------------------------------------------------------------------

def test_env_activation_of_a_real_prefix(built: Built) -> None:
    facts = activation.write_env_activation(built.paths, built.env_key, built.prefix)
    directory = built.paths.activation / built.env_key
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["env.json", "deactivate.d.sh", "deactivate.d.fish",
         *(f"activate.{s}" for s in ("bash", "zsh", "fish", "sh", "json"))])
    # env_vars.d/hello.json names the real prefix: the text placeholder was replaced at install.
    assert dict(facts.env_vars) == {"HELLO_HOME": f"{built.prefix}/share/hello"}
    assert facts.activate["sh"] == (f"{built.prefix}/etc/conda/activate.d/hello.sh",)
    assert facts.activate["fish"] == (f"{built.prefix}/etc/conda/activate.d/hello.fish",)
    assert facts.deactivate["sh"] == (f"{built.prefix}/etc/conda/deactivate.d/hello.sh",)
    assert facts.warnings == ()
    assert activation.load_env_facts(built.paths, built.env_key, built.prefix) == facts
    assert (directory / "deactivate.d.sh").read_text() == f". '{built.prefix}/etc/conda/deactivate.d/hello.sh'\n"
    # The cold-start script works on its own: POSIX sh, no daemon, no Python.
    probe = run_shell("sh", f". '{directory}/activate.sh'; hello; printf '%s' \"$HELLO_ACTIVATED\"", built.prefix)
    assert probe.stdout == f"Hello 2.0 from {built.prefix}\n1"


def test_env_vars_follow_conda_rules(built: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    prefix = fake_prefix(tmp_path / "p", {
        "etc/conda/env_vars.d/b.json": json.dumps({"shared": "from b", "only_b": "b", "GONE": "pkg", "PATH": "/x"}),
        "etc/conda/env_vars.d/a.json": json.dumps({"SHARED": "from a", "NUMBER": 3}),
        "etc/conda/env_vars.d/broken.json": "{not json",
        "conda-meta/state": json.dumps({"env_vars": {"only_state": "s", "GONE": "***unset***", "ONLY_B": "state"}}),
        "etc/conda/activate.d/20-b.sh": "", "etc/conda/activate.d/10-a.sh": "",
        "etc/conda/activate.d/10-a.fish": "", "etc/conda/activate.d/x.csh": "",
        "etc/conda/deactivate.d/10-a.sh": "", "etc/conda/deactivate.d/20-b.sh": "",
    })
    facts = activation.env_facts(built.paths, "k" * 64, prefix)
    # Files in name order (b after a), then state; keys upper-cased; ***unset*** drops; PATH is never taken.
    assert dict(facts.env_vars) == {"SHARED": "from b", "ONLY_B": "state", "ONLY_STATE": "s"}
    assert facts.activate == {"sh": (f"{prefix}/etc/conda/activate.d/10-a.sh", f"{prefix}/etc/conda/activate.d/20-b.sh"),
                              "fish": (f"{prefix}/etc/conda/activate.d/10-a.fish",)}
    assert facts.deactivate["sh"] == (f"{prefix}/etc/conda/deactivate.d/20-b.sh",
                                      f"{prefix}/etc/conda/deactivate.d/10-a.sh")
    assert any("broken.json" in w for w in facts.warnings)
    assert any("NUMBER" in w for w in facts.warnings) and any("PATH" in w for w in facts.warnings)
    # A state file without env_vars is normal (rattler fails on it).
    (prefix / "conda-meta" / "state").write_text("{}")
    assert dict(activation.env_facts(built.paths, "k" * 64, prefix).env_vars)["ONLY_B"] == "b"


# -- project level -----------------------------------------------------------------------------

def test_project_files_are_private_atomic_and_stable(built: Built, tmp_path: Path) -> None:
    project = tmp_path / "my proj"
    project.mkdir()
    (project / ".env").write_text("TOKEN=one\n")
    assert not activation.refresh_project_activation(built.paths, project)  # nothing to refresh yet
    assert activation.write_project_activation(built.paths, project, "mine", built.env_key, built.prefix,
                                               variables=(("FROM_YML", "1"),))
    directory = activation.project_activation_dir(built.paths, project)
    assert directory == built.paths.state / "projects" / str(project).lstrip("/") / ".provisiond"
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["stamp", *(f"activate.{s}" for s in ("bash", "zsh", "fish", "sh", "json"))])
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for parent in (directory, *directory.parents):
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700
        if parent == built.paths.state:
            break
    stamp = (directory / "stamp").read_text()
    assert stamp.endswith("\n") and stamp.startswith(built.env_key[:12])

    # Same inputs: nothing rewritten, the generation (and so every shell's activation) stays.
    assert not activation.write_project_activation(built.paths, project, "mine", built.env_key, built.prefix,
                                                   variables=(("FROM_YML", "1"),))
    assert (directory / "stamp").read_text() == stamp
    # A .env edit re-renders without the spec: the env and the yml's variables are kept.
    (project / ".env").write_text("TOKEN=two\n")
    assert activation.refresh_project_activation(built.paths, project)
    new_stamp = (directory / "stamp").read_text()
    assert new_stamp != stamp
    data = json.loads((directory / "activate.json").read_text())
    assert data["set"]["TOKEN"] == "two" and data["variables"] == {"FROM_YML": "1"}
    assert f"_PROVISIOND_GEN='{new_stamp.strip()}'" in (directory / "activate.bash").read_text()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

    # A nested project keeps its own files when the outer one goes.
    nested = project / "inner"
    nested.mkdir()
    activation.write_project_activation(built.paths, nested, "inner", built.env_key, built.prefix)
    activation.remove_project_activation(built.paths, project)
    assert not directory.exists()
    assert activation.read_project_activation(built.paths, nested, "bash") is not None
    activation.remove_project_activation(built.paths, nested)
    assert not (built.paths.projects_state / str(project).lstrip("/")).exists()
    assert built.paths.projects_state.is_dir()


def test_secrets_stay_out_of_the_store_and_the_logs(built: Built, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-value-9f1c"
    project = tmp_path / "p"
    project.mkdir()
    (project / ".env").write_text(f"# comment\nAPI_KEY={secret}\nnot a line {secret}\n")
    with caplog.at_level(logging.DEBUG):
        activation.write_project_activation(built.paths, project, "p", built.env_key, built.prefix)
    assert secret not in caplog.text
    assert "line 3: expected KEY=value" in caplog.text
    for path in built.daemon.home.rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert secret.encode() not in path.read_bytes(), path
    assert secret in (activation.read_project_activation(built.paths, project, "json") or "")


def test_shell_control_variables_never_reach_a_script(built: Built, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """`.env` and `variables:` may not set what the shell or the loader runs (issue #9, part 2)."""
    project = tmp_path / "p"
    project.mkdir()
    (project / ".env").write_text("PROMPT_COMMAND=id\nLD_PRELOAD=/tmp/evil.so\nfish_function_path=/tmp\nKEPT=1\n")
    variables = [("BASH_ENV", "/tmp/x"), ("PS1", "$(id)"), ("ZDOTDIR", "/tmp"), ("OWN", "yes")]
    with caplog.at_level(logging.WARNING):
        activation.write_project_activation(built.paths, project, "p", built.env_key, built.prefix, variables,
                                            prompt=False)
    data = json.loads(activation.read_project_activation(built.paths, project, "json") or "{}")
    assert {"KEPT", "OWN"} <= set(data["set"])
    for name in ("PROMPT_COMMAND", "LD_PRELOAD", "fish_function_path", "BASH_ENV", "PS1", "ZDOTDIR"):
        assert name not in data["set"]
        assert f"{name!r} ignored: it controls the shell" in caplog.text
        for shell in ("bash", "zsh", "fish", "sh"):
            script = activation.read_project_activation(built.paths, project, shell) or ""
            if name == "PS1":  # the deactivation part restores a prompt modifier: never an assignment of it
                assert "PS1=" not in script.replace("PS1=$_PROVISIOND_PS1_OLD", "").replace("PS1=${PS1#", "")
            else:
                assert name not in script
    # With it, the prompt gets "(p) " and nothing of the refused values.
    activation.write_project_activation(built.paths, project, "p", built.env_key, built.prefix, variables)
    for shell in ("bash", "zsh", "fish", "sh"):
        script = activation.read_project_activation(built.paths, project, shell) or ""
        assert "(p) " in script and "$(id)" not in script and "/tmp/x" not in script


def test_json_form_has_what_a_tool_needs(built: Built, tmp_path: Path) -> None:
    project = tmp_path / "tool"
    project.mkdir()
    (project / ".env").write_text('export DB_URL="postgres://u:p@h/db"\n')
    activation.write_project_activation(built.paths, project, "tool", built.env_key, built.prefix,
                                        variables=(("my_var", "yml $value"),))
    data = json.loads(activation.read_project_activation(built.paths, project, "json") or "")
    assert data["name"] == "tool" and data["project"] == str(project) and data["env_key"] == built.env_key
    assert data["path_prepend"] == [f"{built.prefix}/bin"]
    assert data["set"] == {"CONDA_PREFIX": str(built.prefix), "CONDA_DEFAULT_ENV": "tool", "CONDA_SHLVL": "1",
                           "CONDA_PROMPT_MODIFIER": "(tool) ", "HELLO_HOME": f"{built.prefix}/share/hello",
                           "MY_VAR": "yml $value", "DB_URL": "postgres://u:p@h/db"}
    assert data["variables"] == {"MY_VAR": "yml $value"}
    assert data["unset"] == [] and data["scripts"] == [f"{built.prefix}/etc/conda/activate.d/hello.sh"]
    assert data["generation"] == (activation.project_activation_dir(built.paths, project) / "stamp").read_text().strip()


def test_dotenv_parsing() -> None:
    text = ("# comment\n\nA=plain value  # trailing comment\nexport B='single $NOT #kept'\n"
            'C="double \\"esc\\" \\n \\\\ $KEEP"\nD=\nE="multi\nline"\nbad-name=1\nnoequals\n'
            "F='unterminated\n")
    pairs, problems = parse_dotenv(text)
    assert pairs == [("A", "plain value"), ("B", "single $NOT #kept"), ("C", 'double "esc" \n \\ $KEEP'),
                     ("D", ""), ("E", "multi\nline")]
    assert problems == ["line 9: expected KEY=value", "line 10: expected KEY=value", "line 11: F: no closing ' quote"]


# -- rendering in real shells ------------------------------------------------------------------

@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_values_reach_every_shell_literally(built: Built, tmp_path: Path, shell: str) -> None:
    facts = activation.load_env_facts(built.paths, built.env_key, built.prefix)
    act = Activation(name="quoting", facts=facts, variables=tuple(NASTY.items()))
    script = tmp_path / "activate"
    script.write_text(activation.render_activation(act, shell))
    names = list(NASTY)
    source = "source" if shell == "fish" else "."
    run_shell(shell, f"{source} '{script}'; {dump(shell, names, tmp_path / 'out')}", tmp_path)
    assert read_values(tmp_path / "out", names) == NASTY
    assert not (tmp_path / "pwned").exists()


def forget_undo(shell: str, how: str) -> str:
    """``generic``: drop the activation's own undo (undo.py), as a child shell has it, so the generic code runs."""
    if how == "own":
        return ""
    return "set -eg __provisiond_undo_gen; " if shell == "fish" else "unset __provisiond_undo_gen; "


@pytest.mark.parametrize("how", ["own", "generic"])
@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_deactivation_restores_the_environment_exactly(built: Built, tmp_path: Path, shell: str, how: str) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".env").write_text("EMPTY=filled\nUNSET_BEFORE=now set\nLOCALV=exported now\n")
    activation.write_project_activation(built.paths, project, "proj", built.env_key, built.prefix)
    script = activation.project_activation_dir(built.paths, project) / f"activate.{shell}"
    (tmp_path / "deactivate").write_text(activation.render_deactivation(shell))
    names = ["CONDA_SHLVL", "CONDA_PREFIX", "HELLO_HOME", "EMPTY", "UNSET_BEFORE", "HELLO_ACTIVATED"]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HELLO_HOME": "before", "EMPTY": "",
           "CONDA_SHLVL": "1", "CONDA_PREFIX": "/opt/outer conda"}  # an outer conda env stays underneath
    source = "source" if shell == "fish" else "."
    # A set-but-not-exported variable must come back not exported (POSIX sh cannot tell them apart).
    local = "" if shell == "sh" else ("set -g LOCALV mine; " if shell == "fish" else "LOCALV=mine; ")
    run_shell(shell, (
        f"{local}/usr/bin/env -0 > before; {source} '{script}'; {source} '{script}'; "
        f"{dump(shell, names, tmp_path / 'active')}; /usr/bin/env -0 > active.env; "
        f"{forget_undo(shell, how)}{source} ./deactivate; /usr/bin/env -0 > after; "
        f"{dump(shell, ['LOCALV'], tmp_path / 'local')}"), tmp_path, env)
    assert read_values(tmp_path / "active", names) == {
        "CONDA_SHLVL": "2", "CONDA_PREFIX": str(built.prefix), "HELLO_HOME": f"{built.prefix}/share/hello",
        "EMPTY": "filled", "UNSET_BEFORE": "now set", "HELLO_ACTIVATED": "1"}
    assert environ(tmp_path / "after") == environ(tmp_path / "before")
    assert read_values(tmp_path / "local", ["LOCALV"]) == {"LOCALV": "<unset>" if shell == "sh" else "mine"}
    if shell != "sh":  # while active it was exported like every activation variable
        assert b"LOCALV=exported now" in environ(tmp_path / "active.env")


@pytest.mark.parametrize("how", ["own", "generic"])
@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_path_edits_made_while_active_survive_deactivation(built: Built, tmp_path: Path, shell: str, how: str) -> None:
    facts = activation.load_env_facts(built.paths, built.env_key, built.prefix)
    (tmp_path / "activate").write_text(activation.render_activation(Activation("p", facts), shell))
    (tmp_path / "deactivate").write_text(activation.render_deactivation(shell))
    source, append = ("source", "set -gx PATH $PATH /extra") if shell == "fish" else (".", 'PATH="$PATH:/extra"')
    run_shell(shell, f"{source} ./activate; {append}; {forget_undo(shell, how)}{source} ./deactivate; "
                     f"{dump(shell, ['PATH'], tmp_path / 'out')}", tmp_path)
    assert read_values(tmp_path / "out", ["PATH"]) == {"PATH": "/usr/bin:/bin:/extra"}


@pytest.mark.parametrize("before", ["", None], ids=["empty", "unset"])
def test_an_empty_or_unset_path_comes_back_as_it_was(built: Built, tmp_path: Path, before: str | None) -> None:
    facts = activation.load_env_facts(built.paths, built.env_key, built.prefix)
    (tmp_path / "activate").write_text(activation.render_activation(Activation("p", facts), "bash"))
    (tmp_path / "deactivate").write_text(activation.render_deactivation("bash"))
    setup = "PATH=" if before == "" else "unset PATH"
    run_shell("bash", f"{setup}; . ./activate; {dump('bash', ['PATH'], tmp_path / 'on')}; hello > hello.out; "
                      f". ./deactivate; {dump('bash', ['PATH'], tmp_path / 'off')}", tmp_path)
    assert read_values(tmp_path / "on", ["PATH"]) == {"PATH": f"{built.prefix}/bin"}  # no trailing ':' (= cwd)
    assert (tmp_path / "hello.out").read_text() == f"Hello 2.0 from {built.prefix}\n"
    assert read_values(tmp_path / "off", ["PATH"]) == {"PATH": "<unset>" if before is None else ""}


# -- provisionctl ------------------------------------------------------------------------------

@pytest.fixture
def user_state(built: Built, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Paths:
    """provisionctl in this process sees the daemon's per-user state dir."""
    monkeypatch.setenv("PROVISIOND_STATE", str(built.paths.state))
    monkeypatch.setenv("PROVISIOND_CONFIG", str(tmp_path / "none.toml"))
    return built.paths


def test_activate_by_path_reads_the_files_without_the_daemon(built: Built, user_state: Paths, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path / "offline", Path("/nonexistent-channel"), ["hello"])
    (project / "src" / "pkg").mkdir(parents=True)
    activation.write_project_activation(user_state, project, "offline", built.env_key, built.prefix)
    code = cli.main(["--socket", str(tmp_path / "no.sock"), "activate", str(project / "src" / "pkg"),
                     "--shell", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["name"] == "offline"


def test_activate_by_path_fast_path_reads_one_file(built: Built, user_state: Paths, tmp_path: Path) -> None:
    """The console entry point answers `activate PATH` of a ready project from the file, no CLI imports."""
    import os
    import subprocess
    import sys

    project = write_project(tmp_path / "fast", Path("/nonexistent-channel"), ["hello"])
    (project / "src").mkdir()
    activation.write_project_activation(user_state, project, "fast", built.env_key, built.prefix)
    probe = (
        "import sys\n"
        "from provisiond.cli import entry as ctl\n"
        f"assert ctl._fast_activate(['activate', {str(project / 'src')!r}, '--shell', 'bash']) == 0\n"
        "sys.stdout.flush()\n"
        "heavy = [m for m in ('argparse', 'json', 'pathlib', 'provisiond.cli.commands', 'provisiond.shell.activation')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == activation.read_project_activation(user_state, project, "bash")
    # Not built yet: the fast path declines (cli.main then asks the daemon).
    other = write_project(tmp_path / "other", Path("/nonexistent-channel"), ["hello"])
    decline = "from provisiond.cli import entry as ctl\n" f"assert ctl._fast_activate(['activate', {str(other)!r}]) is None\n"
    assert subprocess.run([sys.executable, "-c", decline], env=dict(os.environ)).returncode == 0


def test_activate_by_name_and_deactivate(built: Built, user_state: Paths, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (built.project / ".env").write_text("PROJECT_SECRET=x y\n")
    activation.write_project_activation(user_state, built.project, "hello-env", built.env_key, built.prefix)
    code, out, err = built.daemon.ctl("activate", "hello-env", "--shell", "bash")
    assert code == 0, err
    assert "export PROJECT_SECRET='x y'" in out and "_PROVISIOND_PROJECT=" in out
    # A file env has no project files: rendered from the store's env.json under its own name.
    tools = tmp_path / "tools.yml"
    tools.write_text((built.project / "environment.yml").read_text())
    code, _, err = built.daemon.ctl("create", "-f", str(tools), "-n", "tools")
    assert code == 0, err
    code, out, err = built.daemon.ctl("activate", "tools", "--shell", "zsh")
    assert code == 0, err
    assert "export CONDA_DEFAULT_ENV='tools'" in out and "PROJECT_SECRET" not in out
    code, out, _ = built.daemon.ctl("deactivate", "--shell", "fish")
    assert code == 0 and "set -q _PROVISIOND_ACTIVE" in out
    code, _, err = built.daemon.ctl("activate", "no-such-env")
    assert code == os.EX_NOINPUT and "no-such-env" in err


def test_hook_bakes_in_the_state_dir_and_the_command(user_state: Paths, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--socket", str(tmp_path / "d.sock"), "hook", "bash"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert f"__provisiond_state='{user_state.projects_state}'" in out
    assert f"'--socket' '{tmp_path / 'd.sock'}'" in out
    assert not [p for p in ("@STATE@", "@CTL@", "@DEACTIVATE@") if p in out]


def test_shell_commands_import_nothing_heavy() -> None:
    code = ("import sys, io, contextlib\nfrom provisiond.cli import commands as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    cli.main(['hook', 'zsh']); cli.main(['deactivate', '--shell', 'sh'])\n"
            "heavy = [m for m in ('aiohttp', 'ruamel', 'rattler') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize("shell", ["bash", "sh", "zsh", "fish"])
def test_an_active_shell_holds_a_lease(built: Built, shell: str) -> None:
    """gc never removes an env a live shell has active: activating writes leases/<env_key>.<shell pid>."""
    import shutil
    import subprocess

    from provisiond.store.gc import leased

    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = built.project.parent / f"activate.{shell}"
    script.write_text(activation.render_activation(
        activation.Activation(name="leaser", facts=activation.load_env_facts(built.paths, built.env_key)), shell))
    pid_var = "$fish_pid" if shell == "fish" else "$$"
    proc = subprocess.Popen([shell, "-c", f". {script}; echo {pid_var}; read _"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert (built.paths.home / "leases" / f"{built.env_key}.{pid}").exists()
        assert built.env_key in leased(built.paths)
    finally:
        proc.communicate("\n")
    assert built.env_key not in leased(built.paths)  # the shell is gone: its lease lapsed
    assert not (built.paths.home / "leases" / f"{built.env_key}.{pid}").exists()


@pytest.mark.parametrize("shell", ["bash", "sh", "zsh", "fish"])
def test_a_project_path_cannot_inject_commands(built: Built, tmp_path: Path, shell: str) -> None:
    """Directory names may hold newlines and quotes: nothing in them may run when the script is sourced."""
    import shutil
    import subprocess

    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    pwned = tmp_path / "PWNED"
    evil = f"/tmp/x\ntouch {pwned}\n'$(touch {pwned})'`touch {pwned}`"
    act = activation.Activation(name=f"n\ntouch {pwned}", facts=activation.load_env_facts(built.paths, built.env_key),
                                project=evil, variables=(("V", f"$(touch {pwned})\ntouch {pwned}"),))
    script = tmp_path / f"activate.{shell}"
    script.write_text(activation.render_activation(act, shell))
    proc = subprocess.run([shell, "-c", f". {script}; printf %s \"$V\""], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"$(touch {pwned})\ntouch {pwned}"
    assert not pwned.exists()


def test_cold_start_spells_the_store_layout_of_layout_py() -> None:
    """shell/cold-start ships verbatim into images: it must name the files layout.py names."""
    from importlib import resources

    from provisiond.config import layout

    script = resources.files("provisiond.shell").joinpath("cold-start").read_text(encoding="utf-8")
    for spelled in (f"/{layout.ACTIVATION}/{layout.NAMES}", f"/{layout.NAME_TARGET}", f"/{layout.LEASES}/",
                    f"/{layout.MARKER}"):
        assert spelled in script, spelled


def test_activate_by_name_fast_path_reads_the_store_without_the_daemon(built: Built, user_state: Paths,
                                                                      tmp_path: Path) -> None:
    """`activate NAME` of a ready env is answered from the name's files in the store (a project's name:
    from its project's files), with no daemon, no argparse and no json; what the slow path prints."""
    import subprocess
    import sys

    tools = tmp_path / "tools.yml"
    tools.write_text((built.project / "environment.yml").read_text() + "variables:\n  TOOLS_MODE: fast\n")
    code, _, err = built.daemon.ctl("create", "-f", str(tools), "-n", "tools-fast")
    assert code == 0, err
    env = {**os.environ, "PROVISIOND_HOME": str(built.paths.home), "PROVISIOND_STATE": str(built.paths.state)}

    def fast(name: str, shell: str) -> subprocess.CompletedProcess[str]:
        probe = (
            "import sys\n"
            "from provisiond.cli import entry as ctl\n"
            f"code = ctl._fast_activate(['--socket', {str(tmp_path / 'no.sock')!r}, 'activate', {name!r}, "
            f"'--shell', {shell!r}])\n"
            "sys.stdout.flush()\n"
            "heavy = [m for m in ('argparse', 'json', 'pathlib', 'provisiond.cli.commands') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "sys.exit(3 if code is None else code)\n"
        )
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)

    for shell in ("bash", "zsh", "fish", "sh"):
        answer = fast("tools-fast", shell)
        assert answer.returncode == 0, answer.stderr
        code, slow, err = built.daemon.ctl("--home", str(built.paths.home), "activate", "tools-fast", "--shell", shell)
        assert code == 0, err
        assert answer.stdout == slow  # the same script both ways, with the file's `variables:`
        assert "TOOLS_MODE" in answer.stdout and "(tools-fast) " in answer.stdout
    # A project's name: the project's activation, .env values included (the state dir, not the store).
    # (A project the daemon does not watch: its files are only what this test writes.)
    project = write_project(tmp_path / "fast-project", Path("/nonexistent-channel"), ["hello"])
    (project / ".env").write_text("PROJECT_SECRET=fast\n")
    activation.write_project_activation(user_state, project, "fast-project", built.env_key, built.prefix)
    activation.write_name_activation(user_state, "fast-project", built.env_key, built.prefix, project=str(project))
    answer = fast("fast-project", "bash")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == activation.read_project_activation(user_state, project, "bash")
    assert "PROJECT_SECRET='fast'" in answer.stdout
    activation.remove_name_activation(user_state, "fast-project")
    assert fast("no-such-env", "bash").returncode == 3  # declined: cli.main asks the daemon and says why
