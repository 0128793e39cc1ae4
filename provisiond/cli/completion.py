"""``provisionctl completion bash|zsh|fish``: shell completion of commands, options, env and project
names, and paths.

The scripts are thin: at each Tab they run ``provisionctl completion --complete N -- WORDS...``,
which answers from the same declarations the parser reads (``args_NAME`` through argv.Parser), so
a new command or option completes with no change here. Names come from the daemon (``GET
/v1/envs``: every env and project), or, when it is not running, from the store's activation
directory (the ready ones). Words for paths (``NAME|PATH``, ``DIR``, ``FILE``) add the matching
files and directories.
"""

from __future__ import annotations

import os

from provisiond.cli import argv as cli_argv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

SHELLS = ("bash", "zsh", "fish")

_BASH = r"""# provisionctl completion for bash: eval "$(provisionctl completion bash)" in ~/.bashrc
_provisionctl() {
    local IFS=$'\n'
    COMPREPLY=($(@CTL@ completion --complete "$COMP_CWORD" bash -- "${COMP_WORDS[@]}" 2>/dev/null))
    if [ "${#COMPREPLY[@]}" = 1 ] && [ "${COMPREPLY[0]%/}" != "${COMPREPLY[0]}" ]; then
        compopt -o nospace 2>/dev/null
    fi
}
complete -F _provisionctl provisionctl
"""

_ZSH = r"""# provisionctl completion for zsh: eval "$(provisionctl completion zsh)" in ~/.zshrc (after compinit)
_provisionctl() {
    local -a candidates
    candidates=("${(@f)$(@CTL@ completion --complete $((CURRENT - 1)) zsh -- "${words[@]}" 2>/dev/null)}")
    candidates=(${candidates:#})
    local -a dirs others
    dirs=(${(M)candidates:#*/})
    others=(${candidates:#*/})
    (( ${#others} )) && compadd -- "${others[@]}"
    (( ${#dirs} )) && compadd -S '' -- "${dirs[@]}"
    return 0
}
if (( $+functions[compdef] )); then
    compdef _provisionctl provisionctl
fi
"""

_FISH = r"""# provisionctl completion for fish: provisionctl completion fish | source   (in config.fish)
function __provisionctl_complete
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    @CTL@ completion --complete (count $words) fish -- $words $current 2>/dev/null
end
complete -c provisionctl -f -a '(__provisionctl_complete)'
"""


def args_completion(p: argparse.ArgumentParser) -> None:
    p.add_argument("--complete", type=int, metavar="N",
                   help="what the scripts run at each Tab: the candidates for word N of the words after --")
    p.add_argument("shell", choices=SHELLS, help="the shell to print the script for (eval it; fish: | source)")
    p.add_argument("words", nargs=cli_argv.REMAINDER, help=cli_argv.suppress(p))


def cmd_completion(args: argparse.Namespace) -> dict[str, object]:
    if args.complete is not None:
        return {"candidates": candidates(args, args.complete, list(args.words))}
    script = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}[args.shell]
    return {"script": script.replace("@CTL@", "command provisionctl")}


def render_completion(result: dict[str, object]) -> str:
    if "script" in result:
        return str(result["script"]).rstrip("\n")
    return "\n".join(str(c) for c in result["candidates"])  # type: ignore[attr-defined]  # a list


def candidates(args: argparse.Namespace, index: int, words: list[str]) -> list[str]:
    """What may stand at ``words[index]`` (words[0] is the program), starting with what is typed."""
    from provisiond.cli.commands import COMMANDS, _command_in, _module

    words = [*words[1:index], words[index] if index < len(words) else ""]
    current, before = words[-1], words[:-1]
    at = _command_in(before)
    if before and before[-1] in ("--socket", "--home"):
        return _paths(current)
    if at is None:
        if current.startswith("-"):
            return _starting(current, ["--socket", "--home", "--json", "-q", "--quiet", "-v", "--verbose",
                                       "--version", "--help"])
        return _starting(current, [c for c in COMMANDS if not c.startswith("_")])
    command = before[at]
    parser = cli_argv.Parser()
    cli_argv.declare_globals(parser, top=False)
    declare = getattr(_module(command), f"args_{command}", None)
    if declare is not None:
        declare(parser)
    if "--" in before[at + 1:]:
        return _paths(current)  # run NAME -- CMD: the command's own words
    previous = before[-1] if len(before) > at + 1 else None
    if previous in parser.options and parser.options[previous].action == "store":
        option = parser.options[previous]
        if option.choices:
            return _starting(current, [str(c) for c in option.choices])
        return _paths(current)
    if current.startswith("-"):
        return _starting(current, [*sorted(parser.options), "--help"])
    # Which positional is this? Count the words after the command that are not options or their values.
    position, skip = 0, False
    for word in before[at + 1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            given = parser.options.get(word)
            skip = given is not None and given.action == "store"
        else:
            position += 1
    positional = _positional(parser, position)
    if positional is None:
        return []
    if positional.choices:
        return _starting(current, [str(c) for c in positional.choices])
    kinds = str(positional.metavar or positional.dest).upper()
    found: list[str] = []
    if "NAME" in kinds or kinds in ("SRC", "TARGET", "SOURCE"):
        found += _starting(current, _names(args))
    if any(k in kinds for k in ("PATH", "DIR", "FILE")):
        found += _paths(current, dirs_only="DIR" in kinds and "FILE" not in kinds and "PATH" not in kinds)
    return found


def _positional(parser: cli_argv.Parser, position: int) -> cli_argv._Option | None:
    for p in parser.positionals:
        if p.nargs in ("+", "*", cli_argv.REMAINDER) or position == 0:
            return p
        position -= 1
    return None


def _starting(prefix: str, words: list[str]) -> list[str]:
    return [w for w in words if w.startswith(prefix)]


def _names(args: argparse.Namespace) -> list[str]:
    """Every env and project name the daemon knows; without it, the ready ones in the store."""
    from provisiond.cli.client import Client
    from provisiond.domain.errors import ProvisionError

    try:
        envs = Client(args.socket_path(), timeout=2).get("/v1/envs")["envs"]
        return sorted(str(e["name"]) for e in envs)
    except (ProvisionError, KeyError, TypeError, ValueError, OSError):
        pass
    from provisiond.config import layout
    from provisiond.config.locations import Sources

    try:
        home = Sources({"home": getattr(args, "home", None), "socket": getattr(args, "socket", None)},
                       os.environ).home()
        return sorted(n for n in os.listdir(os.path.join(home, layout.ACTIVATION, layout.NAMES))
                      if not n.startswith("."))
    except (ProvisionError, OSError):
        return []


def _paths(current: str, *, dirs_only: bool = False) -> list[str]:
    """Files and directories starting with ``current`` (directories end with ``/``)."""
    directory, _, start = current.rpartition("/")
    where = os.path.expanduser(directory or ".") if directory or not current.startswith("/") else "/"
    if current.startswith("/") and not directory:
        where = "/"
    try:
        entries = sorted(os.listdir(where))
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.startswith(start) or (entry.startswith(".") and not start.startswith(".")):
            continue
        path = f"{directory}/{entry}" if directory or current.startswith("/") else entry
        if os.path.isdir(os.path.join(where, entry)):
            found.append(path + "/")
        elif not dirs_only:
            found.append(path)
    return found
