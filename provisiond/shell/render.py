"""Activation and deactivation scripts for bash, zsh, fish and POSIX sh.

An activation script first undoes whatever provisiond activation is active, saves the value of
every variable it is about to change in ``_PROVISIOND_OLD_<NAME>`` (and lists the names in
``_PROVISIOND_VARS``), then sets them and sources the env's ``activate.d`` scripts. Deactivation is
the same generic code for every env: it reads those exported variables, so it restores exactly what
*this* shell had (set, set-but-empty, unset, not exported), even after a rebuild replaced the files
on disk, and ``provisionctl deactivate`` (another process) can print it. Values are single-quoted:
``$`` never expands (rattler's pitfall, contract §3.3).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from provisiond.shell.undo import FISH_PROMPT_RESTORE, POSIX_PROMPT_RESTORE, prompt_set, undo_call, undo_function

if TYPE_CHECKING:  # hooks.py imports this module on every shell start: no dataclasses for it
    from provisiond.shell.model import Activation

__all__ = ["BOOKKEEPING", "activate_script", "deactivate_body", "deactivate_script", "quote", "source_lines"]

BOOKKEEPING = ("_PROVISIOND_ACTIVE", "_PROVISIOND_PROJECT", "_PROVISIOND_GEN", "_PROVISIOND_ENV",
               "_PROVISIOND_VARS", "_PROVISIOND_LOCAL", "_PROVISIOND_PREPEND")
POSIX_SHELLS = ("bash", "zsh", "sh")

# How each POSIX flavour remembers that a variable was set but not exported, and undoes `export`.
_SAVE_LOCAL = {
    "bash": 'if [ "$__pvd_attr" = 1 ]; then eval "case \\${$__pvd_v@a} in *x*) ;; '
            '*) __pvd_local=\\"\\$__pvd_local $__pvd_v\\" ;; esac"; fi',
    "zsh": 'eval "case \\${(t)$__pvd_v} in *export*) ;; *) __pvd_local=\\"\\$__pvd_local $__pvd_v\\" ;; esac"',
    "sh": ":",  # POSIX sh cannot tell, nor un-export: such a variable comes back exported
}
_UNEXPORT = {"bash": 'export -n "${__pvd_v?}"', "zsh": 'typeset -g +x "$__pvd_v"', "sh": ":"}

_POSIX_DEACTIVATE = """\
if [ -n "${_PROVISIOND_ACTIVE+x}" ]; then
  if [ -n "${_PROVISIOND_ENV-}" ] && [ -f "$_PROVISIOND_ENV/deactivate.d.sh" ]; then
    # shellcheck source=/dev/null
    . "$_PROVISIOND_ENV/deactivate.d.sh"
  fi
  # PATH changed since activation (by the user, or a script): keep the change, drop only our entries.
  __pvd_keep=0
  if [ -n "${_PROVISIOND_PREPEND-}" ] && \\
     [ "${PATH-}" != "$_PROVISIOND_PREPEND${_PROVISIOND_OLD_PATH:+:$_PROVISIOND_OLD_PATH}" ]; then
    __pvd_keep=1
    case ${PATH-} in "$_PROVISIOND_PREPEND":*) PATH=${PATH#"$_PROVISIOND_PREPEND":} ;; esac
  fi
  __pvd_rest="${_PROVISIOND_VARS-} "
  while [ -n "$__pvd_rest" ]; do
    __pvd_v=${__pvd_rest%% *}
    __pvd_rest=${__pvd_rest#* }
    case $__pvd_v in ''|[0-9]*|*[!A-Za-z0-9_]*) continue ;; esac
    if [ "$__pvd_v" = PATH ] && [ "$__pvd_keep" = 1 ]; then
      unset -v _PROVISIOND_OLD_PATH
    elif eval "[ -n \\"\\${_PROVISIOND_OLD_$__pvd_v+x}\\" ]"; then
      eval "export $__pvd_v=\\"\\$_PROVISIOND_OLD_$__pvd_v\\""
      case " ${_PROVISIOND_LOCAL-} " in *" $__pvd_v "*) @UNEXPORT@ ;; esac
      unset -v "_PROVISIOND_OLD_$__pvd_v"
    else
      unset -v "$__pvd_v"
    fi
  done
  unset -v @BOOKKEEPING@ __pvd_v __pvd_rest __pvd_keep
fi
"""

_FISH_DEACTIVATE = """\
if set -q _PROVISIOND_ACTIVE
    if test -n "$_PROVISIOND_ENV"; and test -f "$_PROVISIOND_ENV/deactivate.d.fish"
        source "$_PROVISIOND_ENV/deactivate.d.fish"
    end
    # PATH changed since activation (by the user, or a script): keep the change, drop only our entries.
    set -g __pvd_keep 0
    set -g __pvd_expect "$_PROVISIOND_PREPEND"
    test -n "$_PROVISIOND_OLD_PATH"; and set __pvd_expect "$_PROVISIOND_PREPEND:$_PROVISIOND_OLD_PATH"
    if test -n "$_PROVISIOND_PREPEND"; and test "$PATH" != "$__pvd_expect"
        set __pvd_keep 1
        set -g __pvd_head (string length -- "$_PROVISIOND_PREPEND:")
        if test (string sub -l $__pvd_head -- "$PATH") = "$_PROVISIOND_PREPEND:"
            set -gx PATH (string sub -s (math $__pvd_head + 1) -- "$PATH")
        end
    end
    for __pvd_v in (string split ' ' -- "$_PROVISIOND_VARS")
        string match -qr '^[A-Za-z_][A-Za-z0-9_]*$' -- "$__pvd_v"; or continue
        if test "$__pvd_v" = PATH; and test $__pvd_keep = 1
            set -eg _PROVISIOND_OLD_PATH
        else if set -q _PROVISIOND_OLD_$__pvd_v
            set -g __pvd_old _PROVISIOND_OLD_$__pvd_v
            set -g __pvd_val "$$__pvd_old"
            if contains -- $__pvd_v (string split ' ' -- "$_PROVISIOND_LOCAL")
                set -gu $__pvd_v $__pvd_val
            else if test -z "$__pvd_val"
                # An empty list exports as ''; set PATH '' would become '.'.
                set -gx $__pvd_v
            else
                set -gx $__pvd_v $__pvd_val
            end
            set -eg $__pvd_old
        else
            set -eg $__pvd_v
        end
    end
    set -eg @BOOKKEEPING@ __pvd_v __pvd_old __pvd_val __pvd_keep __pvd_expect __pvd_head
end
"""

_POSIX_SAVE = """\
__pvd_local=
__pvd_rest="$_PROVISIOND_VARS "
while [ -n "$__pvd_rest" ]; do
  __pvd_v=${__pvd_rest%% *}
  __pvd_rest=${__pvd_rest#* }
  [ -n "$__pvd_v" ] || continue
  if eval "[ -n \\"\\${$__pvd_v+x}\\" ]"; then
    eval "export _PROVISIOND_OLD_$__pvd_v=\\"\\$$__pvd_v\\""
    @SAVE_LOCAL@
  else
    unset -v "_PROVISIOND_OLD_$__pvd_v"
  fi
done
case ${CONDA_SHLVL-} in ''|*[!0-9]*|0?*) __pvd_lvl=0 ;; *) __pvd_lvl=$CONDA_SHLVL ;; esac
export CONDA_SHLVL=$((__pvd_lvl + 1))
"""

_FISH_SAVE = """\
set -g __pvd_local
for __pvd_v in $__pvd_vars
    if set -q $__pvd_v
        set -gx _PROVISIOND_OLD_$__pvd_v "$$__pvd_v"
        set -qx $__pvd_v; or set -a __pvd_local $__pvd_v
    else
        set -eg _PROVISIOND_OLD_$__pvd_v
    end
end
set -g __pvd_lvl 0
string match -qr '^[1-9][0-9]*$' -- "$CONDA_SHLVL"; and set __pvd_lvl $CONDA_SHLVL
set -gx CONDA_SHLVL (math $__pvd_lvl + 1)
"""


def quote(shell: str, value: str) -> str:
    """``value`` as one literal word for ``shell``: nothing inside expands, newlines and unicode survive."""
    if shell == "fish":
        # In fish single quotes only \\ and \' are escapes.
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if not value:
        return "''"
    # 'a'\''b' rather than 'a'"'"'b'; empty '' pieces are left out (zsh RC_QUOTES reads '' as a quote).
    return "\\'".join(f"'{part}'" if part else "" for part in value.split("'"))


def source_lines(shell: str, scripts: Iterable[str]) -> str:
    """Shell text that sources ``scripts`` in order (``.`` for POSIX shells, ``source`` for fish)."""
    command = "source" if shell == "fish" else "."
    return "".join(f"{command} {quote(shell, s)}\n" for s in scripts)


def deactivate_body(shell: str) -> str:
    """Undo the active activation: its own straight-line ``__provisiond_undo`` when this shell defined
    it (undo.py), else the generic code that reads the ``_PROVISIOND_*`` variables."""
    if shell == "fish":
        generic = FISH_PROMPT_RESTORE + _FISH_DEACTIVATE.replace("@BOOKKEEPING@", " ".join(BOOKKEEPING))
        return undo_call(shell) + _indent(generic, "    ") + "end\n"
    flavour = _flavour(shell)
    generic = POSIX_PROMPT_RESTORE + _POSIX_DEACTIVATE.replace("@UNEXPORT@", _UNEXPORT[flavour]) \
        .replace("@BOOKKEEPING@", " ".join(BOOKKEEPING))
    return undo_call(shell) + _indent(generic, "  ") + "fi\n"


def _indent(text: str, by: str) -> str:
    return "".join(by + line if line.strip() else line for line in text.splitlines(keepends=True))


def deactivate_script(shell: str) -> str:
    """A self-contained deactivation for ``eval`` (``provisionctl deactivate``)."""
    head = "# provisiond: undo the active provisiond activation (a no-op when none is active)\n"
    return head + _wrap(shell, deactivate_body(shell))


def activate_script(act: Activation, shell: str) -> str:
    """A self-contained activation of ``act`` for ``shell``, safe to ``eval`` or source repeatedly."""
    # repr(): a comment ends at a newline, and a directory name may hold one (code execution on cd).
    target = f" for project {act.project!r}" if act.project else ""
    head = (f"# provisiond: activate env {act.name!r} ({act.facts.prefix!r}){target}\n"
            f"# generation {act.generation or '-'}; undo with: eval \"$(provisionctl deactivate --shell {shell})\"\n")
    names = ["PATH", "CONDA_SHLVL", *act.env()]
    scripts = act.facts.activate["fish" if shell == "fish" else "sh"]
    body = _fish_body(act, names, scripts) if shell == "fish" else _posix_body(act, shell, names, scripts)
    if shell in ("bash", "sh"):
        # Values are literal on purpose ($ must not expand); activate.d scripts live in the prefix.
        # The undo restores saved values by name: shellcheck takes a quoted value for code (SC2089/SC2090).
        head += "# shellcheck disable=SC2016,SC1091,SC2089,SC2090\n"
    return head + _wrap(shell, deactivate_body(shell) + body)


def _leases_dir(act: Activation) -> str:
    """``<home>/leases``: the env's activation dir is ``<home>/activation/<env_key>`` (store.py)."""
    return os.path.join(os.path.dirname(os.path.dirname(act.facts.activation_dir)), "leases")


def _flavour(shell: str) -> str:
    if shell not in POSIX_SHELLS:
        raise ValueError(f"unknown shell {shell!r}")
    return shell


def _wrap(shell: str, body: str) -> str:
    """Run ``body`` without the caller's errexit/nounset, which would kill an interactive shell."""
    if shell == "fish":
        return body
    if shell == "zsh":
        # An anonymous function gives local options; `export` inside it is still global.
        return "() {\nemulate -L zsh\n" + body + "}\n"
    return ("__pvd_opts=$-\nset +eu\n" + body
            + "case $__pvd_opts in *e*) set -e ;; esac\ncase $__pvd_opts in *u*) set -u ;; esac\n"
            "unset -v __pvd_opts\n")


def _posix_body(act: Activation, shell: str, names: list[str], scripts: tuple[str, ...]) -> str:
    flavour = _flavour(shell)
    q = partial(quote, shell)
    lines = [f"_PROVISIOND_VARS={q(' '.join(names))}"]
    if flavour == "bash":
        # ${v@a} (is it exported?) needs bash 4.4; older bash just restores such variables exported.
        lines.append("case ${BASH_VERSION-} in [1-3].*|4.[0-3].*) __pvd_attr=0 ;; *) __pvd_attr=1 ;; esac")
    lines.append(_POSIX_SAVE.replace("@SAVE_LOCAL@", _SAVE_LOCAL[flavour]).rstrip("\n"))
    prepend = ":".join(act.facts.path_prepend)
    lines.append(f'export PATH={q(prepend)}"${{PATH:+:$PATH}}"')
    lines += [f"export {key}={q(value)}" for key, value in act.env().items()]
    lines.append(f"export _PROVISIOND_ACTIVE={q(act.name)} _PROVISIOND_GEN={q(act.generation)} "
                 f"_PROVISIOND_ENV={q(act.facts.activation_dir)} _PROVISIOND_PREPEND={q(prepend)} "
                 '_PROVISIOND_VARS _PROVISIOND_LOCAL="${__pvd_local# }"')
    lines.append(f"export _PROVISIOND_PROJECT={q(act.project)}" if act.project else "unset -v _PROVISIOND_PROJECT")
    if act.prompt:
        lines.append(prompt_set(shell, q(act.env()["CONDA_PROMPT_MODIFIER"])))
    leases = _leases_dir(act)
    # A lease for gc while this shell lives (a builtin redirection: no process).
    lines.append(f'[ -d {q(leases)} ] && true >{q(leases)}"/{act.facts.env_key}.$$"')
    lines.append(source_lines(shell, scripts).rstrip("\n"))
    lines.append("unset -v __pvd_local __pvd_rest __pvd_v __pvd_lvl" + (" __pvd_attr" if flavour == "bash" else ""))
    lines.append(undo_function(shell, names, act.facts.deactivate["sh"], prompt=act.prompt, generation=act.generation,
                               unexport=_UNEXPORT[flavour], bookkeeping=BOOKKEEPING, q=q).rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def _fish_body(act: Activation, names: list[str], scripts: tuple[str, ...]) -> str:
    q = partial(quote, "fish")
    lines = [f"set -g __pvd_vars {' '.join(names)}", f"set -gx _PROVISIOND_VARS {q(' '.join(names))}",
             _FISH_SAVE.rstrip("\n"),
             f"set -gx PATH {' '.join(q(p) for p in act.facts.path_prepend)} $PATH"]
    lines += [f"set -gx {key} {q(value)}" for key, value in act.env().items()]
    lines += [f"set -gx _PROVISIOND_ACTIVE {q(act.name)}", f"set -gx _PROVISIOND_GEN {q(act.generation)}",
              f"set -gx _PROVISIOND_ENV {q(act.facts.activation_dir)}",
              f"set -gx _PROVISIOND_PREPEND {q(':'.join(act.facts.path_prepend))}",
              'set -gx _PROVISIOND_LOCAL "$__pvd_local"',
              f"set -gx _PROVISIOND_PROJECT {q(act.project)}" if act.project else "set -eg _PROVISIOND_PROJECT",
              f'test -d {q(_leases_dir(act))}; and true >{q(_leases_dir(act))}"/{act.facts.env_key}.$fish_pid"',
              prompt_set("fish", q(act.env()["CONDA_PROMPT_MODIFIER"])) if act.prompt else "",
              source_lines("fish", scripts).rstrip("\n"),
              "set -eg __pvd_vars __pvd_local __pvd_v __pvd_lvl",
              undo_function("fish", names, act.facts.deactivate["fish"], prompt=act.prompt, generation=act.generation,
                            unexport=":", bookkeeping=BOOKKEEPING, q=q).rstrip("\n")]
    return "\n".join(line for line in lines if line) + "\n"
