"""Bytes of a user's file to text, as conda reads them: UTF-8, or UTF-16/32 with a byte-order mark."""

from __future__ import annotations

import codecs
import re

from provisiond.domain.errors import SpecError

# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# git's conflict markers: 7 characters at the start of a line (a `=======` alone is also YAML-valid text).
_CONFLICT = re.compile(r"^(<{7}|>{7})(?: |$)", re.M)


def decode(data: bytes, source: str) -> str:
    """The text of a file: UTF-8 (a BOM is dropped), or UTF-16/UTF-32 with a BOM.

    PowerShell's ``conda env export > environment.yml`` writes UTF-16 with a BOM; conda reads it.
    Anything else that is not UTF-8 is a ``SpecError`` at its line and column.
    """
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\0" in data[:4096]:
        raise SpecError(f"{source}:1:1: NUL bytes: UTF-16 or UTF-32 text without a byte-order mark",
                        hint="save the file as UTF-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding == "utf-8":
            row, col = line_col(data.decode("latin-1"), exc.start)
            raise SpecError(f"{source}:{row + 1}:{col + 1}: not UTF-8 text", hint="save the file as UTF-8") from None
        raise SpecError(f"{source}:1:1: not valid {encoding.upper()} text (it starts with a {encoding.upper()} "
                        "byte-order mark)", hint="save the file as UTF-8") from None
    return text.replace("\r\n", "\n") if encoding != "utf-8" else text


def check_conflict_markers(text: str, source: str) -> None:
    """A file with git merge-conflict markers is a merge conflict, not a YAML error: say so, with its line."""
    match = _CONFLICT.search(text)
    if match is not None:
        row, _col = line_col(text, match.start())
        raise SpecError(f"{source}:{row + 1}:1: unresolved merge conflict (a '{match[1]}' marker)",
                        hint="resolve the conflict (keep one side, remove the <<<<<<< ======= >>>>>>> lines)")


def line_col(text: str, offset: int) -> tuple[int, int]:
    """0-based (line, column) of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset)
    return (line, offset - (text.rfind("\n", 0, offset) + 1))
