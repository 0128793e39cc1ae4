"""The prompt modifier, and each activation's own undo: straight-line deactivation for the hook's leave path.

The generic deactivation (render.py) loops over ``_PROVISIOND_VARS`` with ``eval``, so that any
process (``provisionctl deactivate``) can undo any activation. An activation script also defines
``__provisiond_undo``: the same steps unrolled for the variables it set, builtins only, no ``eval``
and no loop, and marks it with ``__provisiond_undo_gen`` (a shell variable, never exported, so a
child shell falls back to the generic code). Leaving a project calls it when the mark matches the
active generation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["FISH_PROMPT_RESTORE", "POSIX_PROMPT_RESTORE", "prompt_set", "undo_call", "undo_function"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The prompt: "(name) " went before PS1, which is saved in _PROVISIOND_PS1_OLD and the result in
# _PROVISIOND_PS1 (shell variables, never exported: a child shell has its own prompt). Restored
# exactly when PS1 is still ours; a prompt changed meanwhile only loses the modifier, as with conda.
POSIX_PROMPT_RESTORE = """\
if [ -n "${_PROVISIOND_PS1+x}" ]; then
  if [ "${PS1-}" = "$_PROVISIOND_PS1" ]; then
    if [ -n "${_PROVISIOND_PS1_OLD+x}" ]; then PS1=$_PROVISIOND_PS1_OLD; else unset -v PS1; fi
  else
    case ${PS1-} in "${CONDA_PROMPT_MODIFIER-}"?*) PS1=${PS1#"${CONDA_PROMPT_MODIFIER-}"} ;; esac
  fi
  unset -v _PROVISIOND_PS1 _PROVISIOND_PS1_OLD
fi
"""

_POSIX_PROMPT_SET = """\
if [ -n "${PS1+x}" ]; then _PROVISIOND_PS1_OLD=$PS1; else unset -v _PROVISIOND_PS1_OLD; fi
PS1=@MODIFIER@"${PS1-}"
_PROVISIOND_PS1=$PS1"""

# fish has a function, not a variable: fish_prompt is copied to __provisiond_fish_prompt and replaced by
# one that prints the modifier first (with $status kept for the original). Copied back on leave,
# unless the prompt was replaced meanwhile (then only our copy goes).
FISH_PROMPT_RESTORE = """\
if set -q _PROVISIOND_PS1
    if functions -q __provisiond_fish_prompt
        set -l __pvd_d (functions -Dv fish_prompt)
        if test "$__pvd_d[5]" = 'provisiond prompt'
            functions -e fish_prompt
            functions -c __provisiond_fish_prompt fish_prompt
        end
        functions -e __provisiond_fish_prompt __provisiond_status
    end
    set -eg _PROVISIOND_PS1
end
"""

_FISH_PROMPT_SET = """\
if functions -q fish_prompt
    functions -e __provisiond_fish_prompt
    functions -c fish_prompt __provisiond_fish_prompt
    function __provisiond_status
        return $argv[1]
    end
    function fish_prompt --description 'provisiond prompt'
        set -l __pvd_status $status
        printf '%s' @MODIFIER@
        __provisiond_status $__pvd_status
        __provisiond_fish_prompt
    end
    set -g _PROVISIOND_PS1 1
end"""


def prompt_set(shell: str, modifier: str) -> str:
    """Put ``modifier`` (already quoted for ``shell``) before the prompt, saving what to restore."""
    return (_FISH_PROMPT_SET if shell == "fish" else _POSIX_PROMPT_SET).replace("@MODIFIER@", modifier)


def undo_call(shell: str) -> str:
    """The test that runs this shell's own undo for the active generation (else the generic code follows)."""
    if shell == "fish":
        return ('if set -q __provisiond_undo_gen; and set -q _PROVISIOND_ACTIVE; '
                'and test "$__provisiond_undo_gen" = "$_PROVISIOND_GEN"\n    __provisiond_undo\nelse\n')
    return ('if [ -n "${__provisiond_undo_gen-}" ] && [ -n "${_PROVISIOND_ACTIVE+x}" ] && '
            '[ "$__provisiond_undo_gen" = "${_PROVISIOND_GEN-}" ]; then\n  __provisiond_undo\nelse\n')


def undo_function(shell: str, names: Sequence[str], scripts: Sequence[str], *, prompt: bool, generation: str,
                  unexport: str, bookkeeping: Sequence[str], q: Callable[[str], str]) -> str:
    """``__provisiond_undo`` for an activation that set ``names`` (PATH first) and whose env has the
    deactivate.d ``scripts``; ``unexport`` undoes ``export`` of ``$__pvd_v`` (":" where it cannot)."""
    names = [n for n in names if _IDENT.fullmatch(n)]
    if shell == "fish":
        return _fish_undo(names, scripts, prompt=prompt, generation=generation, bookkeeping=bookkeeping, q=q)
    lines = ["__provisiond_undo() {"]
    if shell == "zsh":
        lines.append("emulate -L zsh")
    if prompt:
        lines.append(POSIX_PROMPT_RESTORE.rstrip("\n"))
    lines += [f"[ -f {q(s)} ] && . {q(s)}" for s in scripts]
    lines.append('''__pvd_keep=0
if [ -n "${_PROVISIOND_PREPEND-}" ] && \\
   [ "${PATH-}" != "$_PROVISIOND_PREPEND${_PROVISIOND_OLD_PATH:+:$_PROVISIOND_OLD_PATH}" ]; then
  __pvd_keep=1
  case ${PATH-} in "$_PROVISIOND_PREPEND":*) PATH=${PATH#"$_PROVISIOND_PREPEND":} ;; esac
fi''')
    for name in names:
        restore = (f'if [ -n "${{_PROVISIOND_OLD_{name}+x}}" ]; then export {name}="$_PROVISIOND_OLD_{name}"; '
                   f"unset -v _PROVISIOND_OLD_{name}; else unset -v {name}; fi")
        if name == "PATH":
            restore = ('if [ "$__pvd_keep" = 1 ]; then unset -v _PROVISIOND_OLD_PATH; '
                       'elif [ -n "${_PROVISIOND_OLD_PATH+x}" ]; then export PATH="$_PROVISIOND_OLD_PATH"; '
                       "unset -v _PROVISIOND_OLD_PATH; else unset -v PATH; fi")
        lines.append(restore)
    if unexport != ":":
        lines.append('if [ -n "${_PROVISIOND_LOCAL-}" ]; then')
        lines += [f'  case " $_PROVISIOND_LOCAL " in *" {name} "*) __pvd_v={name}; {unexport} ;; esac'
                  for name in names]
        lines.append("fi")
    lines.append(f"unset -v {' '.join(bookkeeping)} __pvd_keep __pvd_v __provisiond_undo_gen")
    lines.append("unset -f __provisiond_undo")
    lines.append("}")
    lines.append(f"__provisiond_undo_gen={q(generation)}")
    return "\n".join(lines) + "\n"


def _fish_undo(names: Sequence[str], scripts: Sequence[str], *, prompt: bool, generation: str,
               bookkeeping: Sequence[str], q: Callable[[str], str]) -> str:
    lines = ["function __provisiond_undo"]
    if prompt:
        lines.append(FISH_PROMPT_RESTORE.rstrip("\n"))
    lines += [f"test -f {q(s)}; and source {q(s)}" for s in scripts]
    lines.append('''set -g __pvd_keep 0
set -g __pvd_expect "$_PROVISIOND_PREPEND"
test -n "$_PROVISIOND_OLD_PATH"; and set __pvd_expect "$_PROVISIOND_PREPEND:$_PROVISIOND_OLD_PATH"
if test -n "$_PROVISIOND_PREPEND"; and test "$PATH" != "$__pvd_expect"
    set __pvd_keep 1
    set -g __pvd_head (string length -- "$_PROVISIOND_PREPEND:")
    if test (string sub -l $__pvd_head -- "$PATH") = "$_PROVISIOND_PREPEND:"
        set -gx PATH (string sub -s (math $__pvd_head + 1) -- "$PATH")
    end
end''')
    for name in names:
        old = f"_PROVISIOND_OLD_{name}"
        body = (f"if set -q {old}\n"
                f'    if test -n "$_PROVISIOND_LOCAL"; and string match -q -- "* {name} *" " $_PROVISIOND_LOCAL "\n'
                f'        set -gu {name} "${old}"\n'
                f'    else if test -z "${old}"\n'
                f"        set -gx {name}\n"
                f"    else\n"
                f'        set -gx {name} "${old}"\n'
                f"    end\n"
                f"    set -eg {old}\n"
                f"else\n"
                f"    set -eg {name}\n"
                f"end")
        if name == "PATH":  # one if/else-if chain, one `end`
            body = f"if test $__pvd_keep = 1\n    set -eg {old}\nelse " + body
        lines.append(body)
    lines.append(f"set -eg {' '.join(bookkeeping)} __pvd_keep __pvd_expect __pvd_head __provisiond_undo_gen")
    lines.append("functions -e __provisiond_undo")
    lines.append("end")
    lines.append(f"set -g __provisiond_undo_gen {q(generation)}")
    return "\n".join(lines) + "\n"
