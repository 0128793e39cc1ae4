"""Which variable names an environment file, a ``.env`` or a package may export into a shell.

A project's ``variables:`` end up exported in the user's interactive shell. Some names are not
data but control: the shell runs them (``PROMPT_COMMAND``, ``PS0``-``PS4`` and ``PROMPT`` expand
command substitutions, ``BASH_ENV``/``ENV``/``ZDOTDIR`` name files the next shell sources), or
the dynamic loader obeys them (``LD_PRELOAD`` loads a library into every process). Those are
refused everywhere activation is rendered, whatever their source. The list comes from bash(1)
"Shell Variables", zshparam(1), fish-doc "Special variables", ld.so(8) and glibc's
"Environment Variables" (``GCONV_PATH`` loads iconv modules), plus our own and conda's.

Stdlib only: provisionctl imports this through activation.
"""

from __future__ import annotations

import re

__all__ = ["RESERVED", "RESERVED_PREFIXES", "is_identifier", "reason_refused"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Compared upper-cased: activation exports names upper-cased, as conda does.
RESERVED = frozenset({
    # Prompts and prompt hooks: expanded (command substitution included) at every prompt.
    "PROMPT_COMMAND", "PS0", "PS1", "PS2", "PS3", "PS4", "PROMPT", "PROMPT2", "PROMPT3", "PROMPT4",
    "RPROMPT", "RPROMPT2", "RPS1", "RPS2", "SPROMPT", "PROMPT_DIRTRIM", "PROMPT_EOL_MARK",
    # Files a shell sources or reads as code, and where it looks for functions.
    "ENV", "ZDOTDIR", "FPATH", "MODULE_PATH", "INPUTRC", "HOSTFILE", "MAILPATH", "MAIL", "MAILCHECK",
    "HISTFILE", "SAVEHIST", "HISTSIZE", "HISTFILESIZE", "HISTCONTROL", "HISTIGNORE", "HISTTIMEFORMAT",
    "CDPATH", "GLOBIGNORE", "EXECIGNORE", "FIGNORE", "TIMEFORMAT", "TMOUT", "IGNOREEOF", "POSIXLY_CORRECT",
    "SHELLOPTS", "BASH", "BASHOPTS", "FUNCNEST", "NULLCMD", "READNULLCMD", "STTY", "PERIOD", "TMPPREFIX",
    "KEYTIMEOUT", "WORDCHARS", "OPTIND", "OPTARG", "OPTERR",
    # Editors the shell itself runs (`fc`, readline's edit-and-execute-command), and zsh's hook arrays.
    "FCEDIT", "EDITOR", "VISUAL", "PRECMD_FUNCTIONS", "PREEXEC_FUNCTIONS", "CHPWD_FUNCTIONS",
    "PERIODIC_FUNCTIONS", "ZSHADDHISTORY_FUNCTIONS", "ZSHEXIT_FUNCTIONS",
    # The shell's own state; some are read-only in bash, and assigning them aborts the script.
    "PATH", "PWD", "OLDPWD", "SHLVL", "_", "IFS", "HOME", "SHELL", "UID", "EUID", "PPID", "GROUPS",
    "HOSTNAME", "HOSTTYPE", "OSTYPE", "MACHTYPE", "RANDOM", "SECONDS", "LINENO", "REPLY",
    # The dynamic loader and glibc: code loaded into every process the shell starts.
    "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "MALLOC_CHECK_", "GLIBC_TUNABLES",
    # Activation's own.
    "CONDA_PREFIX", "CONDA_SHLVL", "CONDA_DEFAULT_ENV", "CONDA_PROMPT_MODIFIER",
})

# Whole families: bash's BASH_ENV, BASH_XTRACEFD, BASH_FUNC_name%% (exported functions); ld.so's
# LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH and the rest; macOS's dyld; fish's fish_function_path,
# fish_user_paths and friends (FISH_ here, names being upper-cased); zsh's ZSH_ and readline's;
# and ours.
RESERVED_PREFIXES = ("BASH_", "LD_", "DYLD_", "FISH_", "__FISH", "ZSH_", "READLINE_", "COMP_",
                     "_PROVISIOND_", "__PVD_")


def is_identifier(name: str) -> bool:
    """True for a name every shell can export: a letter or ``_``, then letters, digits, ``_``."""
    return bool(_IDENTIFIER.match(name))


def reason_refused(name: str) -> str | None:
    """Why ``name`` may not be exported by activation, or None when it may."""
    if not is_identifier(name):
        return "not a valid shell variable name"
    upper = name.upper()
    if upper in RESERVED or upper.startswith(RESERVED_PREFIXES):
        return "it controls the shell or the loader, so activation never sets it"
    return None
