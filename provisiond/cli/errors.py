"""How provisionctl reports a failure: one line and a hint; the whole message (a solver's
explanation, a network error's cause chain) with ``-v``."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from provisiond.domain.errors import ProvisionError


def summary(message: str) -> tuple[str, bool]:
    """The message's first line (with the next one when it only introduces it, as in "cannot be
    solved:"; with the last "Caused by:" of a chain), and whether anything was left out."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return (lines[0] if lines else message), False
    head, used = lines[0], 1
    if head.endswith(":"):
        head, used = f"{head} {lines[1].removeprefix('Caused by: ')}", 2
    tree = [line.lstrip("└├│─ ") for line in lines[used:] if line.startswith(("└─", "├─"))]
    if tree and not tree[0].endswith(":"):  # libmamba: "... could not be installed", then the reason
        head, used = f"{head.rstrip(':')}: {tree[0]}", used + 1
    causes = [line.removeprefix("Caused by: ") for line in lines[used:] if line.startswith("Caused by: ")]
    if causes:  # a chain (rattler's network errors): what failed, then the root cause
        head = f"{head}: {causes[-1]}"
    return head, len(lines) > used + (1 if causes else 0)


def report(exc: ProvisionError, *, as_json: bool, verbose: int) -> int:
    """Print ``exc`` (stderr; with ``as_json`` also ``{"error": ...}`` on stdout); its exit code."""
    if as_json:
        from provisiond.cli import jsontext

        print(jsontext.dumps({"error": exc.to_wire()}, indent=2))
    err = sys.stderr
    if verbose:
        line, more = exc.message.rstrip(), False
    else:
        line, more = summary(exc.message)
    print(f"provisionctl: {line}", file=err)
    hints = [exc.hint] if exc.hint else []
    if more:
        hints.append("add -v for the whole error")
    if hints:
        print(f"hint: {'; '.join(hints)}", file=err)
    if verbose:
        print(f"error code: {exc.code} (exit {exc.exit_code})", file=err)
    return exc.exit_code
