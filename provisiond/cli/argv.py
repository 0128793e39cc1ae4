"""provisionctl's command line without argparse, for the forms people type every day.

``import argparse`` and building one subparser cost provisionctl about 10 ms, as much as starting
Python (argparse imports re, enum and gettext). ``Parser`` accepts the same ``add_argument`` calls
as argparse (each command's ``args_NAME`` declares its arguments once, for both) and reads the
plain forms: exact options, ``--opt=value``, positionals, ``--``. Anything else (``-h``, an
abbreviated or unknown option, a missing argument, a bad choice, a call it does not know, such as
``add_mutually_exclusive_group``) raises ``Fallback``, and argparse parses the same argv again, to
answer it or to report the error in its usual words. tests/cli/test_argv.py checks that both
parsers agree.

The global options (``--socket``, ``--home``, ``--json``, ``-q``, ``-v``) go before or after the
subcommand; nothing after ``--`` is an option.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

REMAINDER = "..."  # argparse.REMAINDER (compared with ==)
SUPPRESS = "==SUPPRESS=="  # argparse.SUPPRESS, which argparse compares with `is`: use suppress(parser)


def suppress(parser: Any) -> str:
    """argparse.SUPPRESS for an argparse parser (it checks identity), SUPPRESS for ours."""
    if isinstance(parser, Parser):
        return SUPPRESS
    import argparse

    return argparse.SUPPRESS


class Fallback(Exception):
    """The light parser does not read this argv: argparse's turn."""


class Args:
    """argparse.Namespace's stand-in (argparse fills it too); ``settings`` loads on first use."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name == "settings":  # dataclasses and pathlib: only commands that need the typed settings pay
            from provisiond.config.settings import load_settings

            self.settings = load_settings({"home": self.__dict__.get("home"), "socket": self.__dict__.get("socket")})
            return self.settings
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Args({', '.join(f'{k}={v!r}' for k, v in sorted(vars(self).items()))})"

    def socket_path(self) -> str:
        """The daemon's socket, as the typed settings would find it (without loading them)."""
        if "settings" in self.__dict__:
            return str(self.settings.paths.socket)
        from provisiond.config.locations import Sources

        return Sources({"home": self.__dict__.get("home"), "socket": self.__dict__.get("socket")},
                       os.environ).socket()


class _Option:
    __slots__ = ("action", "choices", "const", "default", "dest", "metavar", "nargs", "required", "type")

    def __init__(self, dest: str, kw: dict[str, Any]) -> None:
        self.dest = kw.get("dest") or dest
        self.action = kw.get("action", "store")
        self.nargs = kw.get("nargs")
        self.metavar = kw.get("metavar")
        self.const = kw.get("const")
        self.choices = kw.get("choices")
        self.type: Callable[[str], Any] | None = kw.get("type")
        self.required = bool(kw.get("required"))
        default = kw.get("default")
        self.default = False if default is None and self.action == "store_true" else default


_KNOWN = {"action", "nargs", "const", "default", "type", "choices", "required", "help", "metavar", "dest"}
_ACTIONS = {"store", "store_true", "store_const", "count"}


class Parser:
    """The subset of ``argparse.ArgumentParser`` that ``args_NAME`` functions use."""

    def __init__(self) -> None:
        self.options: dict[str, _Option] = {}
        self.positionals: list[_Option] = []
        self.unsupported = False

    def add_argument(self, *names: str, **kw: Any) -> None:
        if set(kw) - _KNOWN or kw.get("action", "store") not in _ACTIONS \
                or kw.get("nargs") not in (None, "?", "+", "*", REMAINDER) \
                or (kw.get("nargs") is not None and kw.get("action", "store") != "store"):
            self.unsupported = True
            return
        if names[0].startswith("-"):
            long = next((n for n in names if n.startswith("--")), names[0])
            option = _Option(long.lstrip("-").replace("-", "_"), kw)
            if option.nargs is not None:
                self.unsupported = True  # options taking several values: argparse's job
            for name in names:
                self.options[name] = option
        else:
            self.positionals.append(_Option(names[0], kw))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """Any other ArgumentParser method (groups, set_defaults, ...): argparse will parse."""
        if name.startswith("__"):
            raise AttributeError(name)

        def unsupported(*args: Any, **kw: Any) -> Parser:
            self.unsupported = True
            return self

        return unsupported

    def parse(self, argv: Sequence[str], into: Args) -> Args:
        if self.unsupported:
            raise Fallback
        values: dict[str, Any] = {}
        for option in {id(o): o for o in self.options.values()}.values():
            if option.default is not SUPPRESS:
                values.setdefault(option.dest, option.default)  # the first declaration of a dest wins
        seen: set[str] = set()
        words: list[str] = []
        rest: list[str] | None = None  # a REMAINDER positional's words, once it started
        i, options_end = 0, False
        while i < len(argv):
            token = argv[i]
            i += 1
            if rest is not None:
                rest.append(token)
                continue
            if options_end or token == "-" or not token.startswith("-"):
                words.append(token)
                if not options_end and self._remainder_starts(len(words)):
                    rest = []
                continue
            if token == "--":
                options_end = True
                continue
            name, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
            found = self.options.get(name)
            if found is None:
                raise Fallback  # unknown, abbreviated, clustered (-qv) or attached (-nNAME): argparse
            option = found
            seen.add(option.dest)
            if option.action == "store":
                if not eq:
                    if i >= len(argv) or (argv[i].startswith("-") and argv[i] != "-"):
                        raise Fallback  # a missing value (or a negative number): argparse says which
                    value, i = argv[i], i + 1
                values[option.dest] = self._convert(option, value)
            elif eq:
                raise Fallback  # --flag=value: argparse's error
            elif option.action == "store_true":
                values[option.dest] = True
            elif option.action == "store_const":
                values[option.dest] = option.const
            else:
                values[option.dest] = (values.get(option.dest, into.__dict__.get(option.dest)) or 0) + 1
        if any(o.required and o.dest not in seen for o in self.options.values()):
            raise Fallback
        self._assign(words, rest, values)
        into.__dict__.update(values)
        return into

    def _remainder_starts(self, count: int) -> bool:
        """Whether the word just read fills the positionals before a REMAINDER one (argparse takes
        everything after them, options included, into it)."""
        for fixed, p in enumerate(self.positionals):
            if p.nargs == REMAINDER:
                return count == fixed
            if p.nargs is not None:
                return False  # ? + * before a REMAINDER: rare, argparse's call
        return False

    def _assign(self, words: list[str], rest: list[str] | None, values: dict[str, Any]) -> None:
        positionals = self.positionals
        if len([p for p in positionals if p.nargs in ("?", "+", "*", REMAINDER)]) > 1:
            raise Fallback  # argparse's greedy matching decides how words split
        needed = sum(1 if p.nargs in (None, "+") else 0 for p in positionals)
        spare = len(words) - needed
        if spare < 0:
            raise Fallback  # too few: argparse names the missing one
        for p in positionals:
            if p.nargs is None:
                values[p.dest] = self._convert(p, words.pop(0))
            elif p.nargs == "?":
                values[p.dest] = self._convert(p, words.pop(0)) if spare else p.default
                spare = 0
            elif p.nargs in ("+", "*"):
                take = spare + (1 if p.nargs == "+" else 0)
                values[p.dest] = [self._convert(p, w) for w in words[:take]]
                del words[:take]
                spare = 0
            else:
                values[p.dest] = [*words, *(rest or [])]
                words, spare = [], 0
        if words:
            raise Fallback  # too many: argparse's "unrecognized arguments"

    @staticmethod
    def _convert(option: _Option, value: str) -> Any:
        if option.type is not None:
            try:
                value = option.type(value)
            except Exception:
                raise Fallback from None
        if option.choices is not None and value not in option.choices:
            raise Fallback
        return value


def declare_globals(p: Any, *, top: bool) -> None:
    """The options every command takes: all of them before its name (``top``); --json, -q and -v
    after it too (``--socket``/``--home`` only before: ``unbundle --home`` means another thing)."""
    hide: dict[str, Any] = {} if top else {"default": suppress(p)}
    if top:
        p.add_argument("--socket", help="daemon socket (env PROVISIOND_SOCKET)")
        p.add_argument("--home", help="store root, used to find the default socket (env PROVISIOND_HOME)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text", **hide)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the answer and errors",
                   **hide)
    p.add_argument("-v", "--verbose", action="count", help="more detail: an error with its whole cause chain",
                   **(hide or {"default": 0}))
