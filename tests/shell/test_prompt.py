"""The prompt modifier (conda's changeps1): "(name) " before the prompt, restored exactly on leave.

Real bash, zsh, sh and fish evaluate the rendered scripts; tmux gives real interactive shells with
the hook at 40 and 120 columns. No daemon: the activation is rendered from a real (empty) prefix.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from provisiond.config.settings import Paths
from provisiond.shell import activation
from provisiond.shell.activation import Activation
from provisiond.shell.hooks import hook_script
from provisiond.shell.render import deactivate_script

ARGV = {"bash": ["bash", "--norc", "--noprofile", "-c"], "zsh": ["zsh", "-f", "-c"], "sh": ["sh", "-c"],
        "fish": ["fish", "--no-config", "-c"]}
# How each shell shows PS1 with its attributes: exported or not, set or not.
SHOW = {"bash": 'if [ -n "${PS1+x}" ]; then declare -p PS1; else echo unset; fi',
        "zsh": 'if [ -n "${PS1+x}" ]; then typeset -p PS1; else echo unset; fi',
        "sh": 'if [ -n "${PS1+x}" ]; then printf "set <%s>\\n" "$PS1"; else echo unset; fi'}
KEY = "ab" * 32


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install -y {tool}; scripts/test does as root)")


def paths(tmp_path: Path) -> Paths:
    return Paths(home=tmp_path / "store", socket=tmp_path / "d.sock", state=tmp_path / "state")


def scripts(tmp_path: Path, name: str, shell: str, *, prompt: bool = True) -> tuple[str, str]:
    p = paths(tmp_path)
    prefix = tmp_path / "store" / "envs" / "abababab"
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    facts = activation.env_facts(p, KEY, prefix)
    act = Activation(name=name, facts=facts, generation="g1", prompt=prompt)
    return activation.render_activation(act, shell), deactivate_script(shell)


def run(shell: str, script: str, cwd: Path) -> list[str]:
    need(shell)
    out = subprocess.run([*ARGV[shell], script], cwd=cwd, env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh"])
@pytest.mark.parametrize("before", ["plain", "exported", "unset", "empty"])
def test_posix_prompt_gets_the_modifier_and_comes_back_exactly(tmp_path: Path, shell: str, before: str) -> None:
    act, deact = scripts(tmp_path, "nlp", shell)
    setup = {"plain": "PS1='\\u@\\h \\w$ '", "exported": "export PS1='\\u@\\h \\w$ '", "unset": "unset PS1",
             "empty": "PS1="}[before]
    lines = run(shell, f"""{setup}
{SHOW[shell]}
eval {shlex.quote(act)}
printf '<%s>\\n' "$PS1"
env | grep -c '^_PROVISIOND_PS1' || true
eval {shlex.quote(act)}
printf '<%s>\\n' "$PS1"
eval {shlex.quote(deact)}
{SHOW[shell]}
printf '%s\\n' "${{_PROVISIOND_PS1-none}}"
""", tmp_path)
    original = lines[0]
    old = {"plain": "\\u@\\h \\w$ ", "exported": "\\u@\\h \\w$ ", "unset": "", "empty": ""}[before]
    assert lines[1] == f"<(nlp) {old}>"
    assert lines[2] == "0"  # shell variables only: a child shell keeps its own prompt
    assert lines[3] == f"<(nlp) {old}>"  # activating again does not stack modifiers
    assert lines[4] == original, "PS1 not restored exactly (value, set or unset, exported or not)"
    assert lines[5] == "none"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_a_prompt_changed_while_active_keeps_the_change_without_the_modifier(tmp_path: Path, shell: str) -> None:
    act, deact = scripts(tmp_path, "nlp", shell)
    lines = run(shell, f"""PS1='old$ '
eval {shlex.quote(act)}
PS1="${{PS1}}[theme] "
eval {shlex.quote(deact)}
printf '<%s>\\n' "$PS1"
""", tmp_path)
    assert lines == ["<old$ [theme] >"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "sh", "fish"])
def test_changeps1_off_leaves_the_prompt_alone(tmp_path: Path, shell: str) -> None:
    act, _ = scripts(tmp_path, "nlp", shell, prompt=False)
    if shell == "fish":
        lines = run(shell, f"function fish_prompt; echo -n 'mine> '; end\n{act} \nfish_prompt; echo", tmp_path)
        assert lines == ["mine> "]
    else:
        lines = run(shell, f"PS1='mine$ '\neval {shlex.quote(act)}\nprintf '<%s>\\n' \"$PS1\" \"$CONDA_PROMPT_MODIFIER\"",
                    tmp_path)
        assert lines == ["<mine$ >", "<(nlp) >"]  # the modifier is still there for prompt themes


def test_fish_prompt_is_wrapped_and_copied_back(tmp_path: Path) -> None:
    act, deact = scripts(tmp_path, "nlp", "fish")
    lines = run("fish", f"""function fish_prompt --description 'my prompt'
    echo -n "[$status] mine> "
end
functions fish_prompt | string match -v '#*'
echo ---
{act}
false; fish_prompt; echo
{act}
true; fish_prompt; echo
{deact}
functions fish_prompt | string match -v '#*'
echo ---
false; fish_prompt; echo
set -q _PROVISIOND_PS1; and echo leftover; functions -q __provisiond_fish_prompt; and echo leftover
true
""", tmp_path)
    cut = lines.index("---")
    before, rest = lines[:cut], lines[cut + 1:]
    assert rest[0] == "(nlp) [1] mine> "  # the original prompt still sees the last command's status
    assert rest[1] == "(nlp) [0] mine> "  # activating again does not stack
    cut = rest.index("---")
    assert rest[2:cut] == before, "fish_prompt not restored"
    assert rest[cut + 1:] == ["[1] mine> "]


# -- real terminals: tmux, interactive shells, the hook ------------------------------------------

def project_with_activation(tmp_path: Path, name: str) -> tuple[Paths, Path]:
    p = paths(tmp_path)
    project = tmp_path / "work" / "proj"
    project.mkdir(parents=True)
    (project / "environment.yml").write_text(f"name: {name}\ndependencies: []\n")
    prefix = tmp_path / "store" / "envs" / "abababab"
    (prefix / "bin").mkdir(parents=True)
    activation.write_project_activation(p, project, name, KEY, prefix)
    return p, project


class Tmux:
    def __init__(self, socket: str, columns: int) -> None:
        self.base = ["tmux", "-L", socket, "-f", "/dev/null"]
        self.columns = columns

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30, check=True).stdout

    def type(self, line: str) -> None:
        self("send-keys", "-t", "t", "-l", line)
        self("send-keys", "-t", "t", "Enter")

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self("capture-pane", "-p", "-t", "t").splitlines() if line.strip()]

    def prompt_after(self, marker: str, timeout: float = 20) -> tuple[str, list[str]]:
        """Type ``echo MARKER`` and return the prompt that follows its output (and the screen): the
        shell's prompt in the state the previous commands left."""
        self.type(f"echo {marker}")
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if marker in screen and screen.index(marker) + 1 < len(screen):
                return screen[screen.index(marker) + 1], screen
            if time.monotonic() > deadline:
                raise AssertionError(f"no prompt after {marker!r}; screen:\n" + "\n".join(screen))
            time.sleep(0.05)


SHELL_START = {"bash": "bash --norc --noprofile -i", "zsh": "zsh -f -i", "fish": "fish --no-config -i"}
PROMPT_SETUP = {"bash": "PS1='$ '", "zsh": "PS1='$ '",
                "fish": "function fish_prompt; echo -n '$ '; end; function fish_greeting; end"}


@pytest.mark.parametrize("columns", [40, 120])
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_prompt_in_a_real_terminal(tmp_path: Path, shell: str, columns: int) -> None:
    """Through tmux: cd into a project shows "(name) " before the prompt, cd out restores it exactly."""
    need("tmux")
    need(shell)
    p, project = project_with_activation(tmp_path, "nlp-exp")
    hook = tmp_path / f"hook.{shell}"
    hook.write_text(hook_script(shell, str(p.projects_state), ["false"]))
    tmux = Tmux(f"pvd-{uuid.uuid4().hex[:8]}", columns)
    env = ["env", "-i", f"HOME={tmp_path}", "PATH=/usr/bin:/bin", "TERM=screen", "LANG=C.UTF-8"]
    tmux("new-session", "-d", "-s", "t", "-x", str(columns), "-y", "12", "-c", str(tmp_path),
         " ".join([*env, SHELL_START[shell]]))
    try:
        source = "source" if shell == "fish" else "."
        tmux.type(f"{PROMPT_SETUP[shell]}; {source} {shlex.quote(str(hook))}")
        assert tmux.prompt_after("ready-1")[0] == "$"
        tmux.type(f"cd {shlex.quote(str(project))}")
        prompt, screen = tmux.prompt_after("inside-2")
        assert prompt == "(nlp-exp) $", screen
        if shell != "fish":  # a child shell inherits the env's variables, not the prompt: the hook puts it back
            tmux.type(SHELL_START[shell])
            tmux.type(f"{PROMPT_SETUP[shell]}; {source} {shlex.quote(str(hook))}")
            prompt, screen = tmux.prompt_after("child-3")
            assert prompt == "(nlp-exp) $", screen
            tmux.type("exit")
        tmux.type("cd /")
        prompt, screen = tmux.prompt_after("outside-4")
        assert prompt == "$", screen  # exactly the prompt from before
        assert all(len(line) <= columns for line in screen)
    finally:
        subprocess.run([*tmux.base, "kill-server"], capture_output=True, timeout=30)
