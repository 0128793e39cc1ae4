"""Parse a project's ``.env`` file: ``KEY=value`` lines, as docker compose and python-dotenv write them.

Values are taken literally: ``$OTHER`` and ``${OTHER}`` are not expanded, so a secret containing ``$``
arrives unchanged. Problems are reported by line number only, never with the value (it may be a secret).
"""

from __future__ import annotations

import re

__all__ = ["parse_dotenv"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOUBLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Return ``(pairs, problems)``: pairs in file order (a later duplicate wins when applied)."""
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        lineno, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            problems.append(f"line {lineno}: expected KEY=value")
            continue
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            # A quoted value may span lines, like python-dotenv's.
            value, consumed = _quoted(rest, lines, i)
            if value is None:
                problems.append(f"line {lineno}: {name}: no closing {rest[0]} quote")
                continue
            i += consumed
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        pairs.append((name, value))
    return pairs, problems


def _quoted(rest: str, lines: list[str], start: int) -> tuple[str | None, int]:
    """The value of a quoted field that starts ``rest``, and how many further lines it used."""
    quote, text, consumed = rest[0], rest[1:], 0
    while True:
        value = _close(text, quote)
        if value is not None:
            return value, consumed
        if start + consumed >= len(lines):
            return None, 0
        text += "\n" + lines[start + consumed]
        consumed += 1


def _close(text: str, quote: str) -> str | None:
    """The unescaped value before the closing ``quote`` in ``text``, or None if it is not closed."""
    if quote == "'":
        end = text.find("'")
        return None if end < 0 else text[:end]
    out, j = [], 0
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text):
            nxt = text[j + 1]
            out.append(_DOUBLE_ESCAPES.get(nxt, "\\" + nxt))
            j += 2
            continue
        if ch == '"':
            return "".join(out)
        out.append(ch)
        j += 1
    return None
