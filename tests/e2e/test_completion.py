"""`provisionctl completion bash|zsh|fish`: the scripts, loaded in the real shells, complete
commands, options, choices and the names of envs and projects the daemon knows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, write_project

BIN = str(Path(sys.executable).parent)


def _shell_env(daemon: Daemon, tmp_path: Path) -> dict[str, str]:
    return {**daemon.environ(), "PROVISIOND_SOCKET": str(daemon.socket), "PATH": f"{BIN}:{os.environ['PATH']}",
            "HOME": str(tmp_path), "ZDOTDIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}


@pytest.fixture
def named(daemon: Daemon, channel: Path, tmp_path: Path) -> Daemon:
    """A daemon that knows a file env `tools` and a project `nlp-exp` (not built)."""
    tools = write_project(tmp_path / "w" / "tools", channel, ["hello"], name="tools")
    assert daemon.ctl("create", "-f", str(tools / "environment.yml"))[0] == 0
    assert daemon.ctl("watch", str(write_project(tmp_path / "w" / "nlp", channel, ["hello"], name="nlp-exp")),
                      "--no-warm")[0] == 0
    return daemon


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    proc = subprocess.run(argv, env=env, cwd=cwd / "w", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")


BASH = """eval "$(provisionctl completion bash)"
complete -p provisionctl
for line in 'provisionctl wa' 'provisionctl warm ' 'provisionctl --json show t' 'provisionctl hook ' \
            'provisionctl create --f' 'provisionctl export tools --format '; do
    read -r -a COMP_WORDS <<<"$line"
    [ "${line% }" != "$line" ] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    _provisionctl
    echo "$line => ${COMPREPLY[*]}"
done
"""


def test_bash_completes_commands_options_and_names(named: Daemon, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not installed (apt: bash)")
    lines = _run(["bash", "--norc", "-c", BASH], _shell_env(named, tmp_path), tmp_path)
    assert lines[0] == "complete -F _provisionctl provisionctl"
    assert "provisionctl wa => watch warm" in lines
    assert "provisionctl warm  => nlp-exp tools nlp/ tools/" in lines  # names, then project dirs
    assert "provisionctl --json show t => tools tools/" in lines
    assert "provisionctl hook  => bash zsh fish" in lines
    assert "provisionctl create --f => --file --force" in lines
    assert "provisionctl export tools --format  => yml explicit conda-lock" in lines


def test_bash_complete_c_runs_the_same_candidates(named: Daemon, tmp_path: Path) -> None:
    """Without the function: `complete -C` hands the words to the program, as bash does at a Tab."""
    if shutil.which("bash") is None:
        pytest.skip("bash not installed (apt: bash)")
    lines = _run(["provisionctl", "completion", "--complete", "2", "bash", "--", "provisionctl", "remove", ""],
                 _shell_env(named, tmp_path), tmp_path)
    assert lines[:2] == ["nlp-exp", "tools"]


ZSH = """autoload -U compinit && compinit -D -u
eval "$(provisionctl completion zsh)"
print -r -- "registered: $_comps[provisionctl]"
compadd() { local i=${@[(i)--]}; print -r -- "${(j: :)@[i+1,-1]}" }
words=(provisionctl warm ''); CURRENT=3; _provisionctl
words=(provisionctl cl); CURRENT=2; _provisionctl
words=(provisionctl activate tools --shell ''); CURRENT=5; _provisionctl
"""


def test_zsh_completes_names_and_choices(named: Daemon, tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh not installed (apt: zsh)")
    lines = _run(["zsh", "-f", "-c", ZSH], _shell_env(named, tmp_path), tmp_path)
    assert lines[0] == "registered: _provisionctl"
    assert lines[1:5] == ["nlp-exp tools", "nlp/ tools/", "clone", "bash zsh fish sh json"]


def test_fish_complete_c(named: Daemon, tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish not installed (apt: fish)")
    script = "provisionctl completion fish | source\ncomplete -C'provisionctl unw'\ncomplete -C'provisionctl show '\n"
    lines = _run(["fish", "--no-config", "-c", script], _shell_env(named, tmp_path), tmp_path)
    assert lines[0] == "unwatch"
    assert sorted(lines[1:5]) == ["nlp-exp", "nlp/", "tools", "tools/"]


def test_names_without_the_daemon_come_from_the_store(named: Daemon, tmp_path: Path) -> None:
    env = _shell_env(named, tmp_path)
    named.stop()
    env["PROVISIOND_HOME"] = str(named.home)
    lines = _run(["provisionctl", "completion", "--complete", "2", "bash", "--", "provisionctl", "run", "t"],
                 env, tmp_path)
    assert lines[:2] == ["tools", "tools/"]  # the ready one (the project was never built)
    named.start()
