"""JSON for provisionctl's hot path, without the ``json`` package.

``import json`` costs provisionctl about 6 ms, half of what starting Python costs: its decoder and
encoder compile regular expressions, which pulls in ``re`` and ``enum``. The C accelerator ``_json``
that ``json`` itself uses needs neither: ``loads`` drives its scanner, ``dumps`` its string escaper.
The output is what ``json.dumps(obj, indent=indent)`` writes (tests/cli/test_jsontext.py compares
them); a type JSON does not know goes to ``json`` itself, which raises its usual TypeError.
"""

from __future__ import annotations

import _json  # the C half of the json package

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Context:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict[str, str] = {}  # noqa: RUF012  # read by the C scanner, which clears it per call


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed: the decoder's attributes
_WHITESPACE = " \t\n\r"


def loads(text: str | bytes) -> Any:
    """``json.loads``: a ValueError (with the position) for a malformed document."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"malformed JSON at character {exc.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after JSON at character {end}")
    return value


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _float(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


class _Unknown(Exception):
    """A value the json package must judge (it raises its own TypeError)."""


def _encode(value: Any, indent: int | None, level: int, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_json.encode_basestring_ascii(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, list | tuple | dict):
        is_dict = isinstance(value, dict)
        if not value:
            out.append("{}" if is_dict else "[]")
            return
        out.append("{" if is_dict else "[")
        if indent is None:
            separator, inner, closing = ", ", "", ""
        else:
            inner = "\n" + " " * (indent * (level + 1))
            separator, closing = "," + inner, "\n" + " " * (indent * level)
        out.append(inner)
        first = True
        for item in (value.items() if isinstance(value, dict) else value):
            if not first:
                out.append(separator)
            first = False
            if is_dict:
                out.append(_json.encode_basestring_ascii(_key(item[0])))
                out.append(": ")
                item = item[1]
            _encode(item, indent, level + 1, out)
        out.append(closing)
        out.append("}" if is_dict else "]")
    else:
        raise _Unknown


def dumps(value: Any, indent: int | None = None) -> str:
    """``json.dumps(value, indent=indent)``."""
    out: list[str] = []
    try:
        _encode(value, indent, 0, out)
    except (_Unknown, TypeError, RecursionError):
        import json

        return json.dumps(value, indent=indent)
    return "".join(out)
