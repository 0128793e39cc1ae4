"""The systemd user units and provisionctl agree on one socket path (stdlib only: the CLI reads it).

``provisionctl daemon install-units`` writes the socket provisionctl itself would use into the
units (``ListenStream=`` and ``--socket``), with ``%t`` for ``$XDG_RUNTIME_DIR`` and ``%h`` for
``$HOME``, so a ``home =`` or ``socket =`` in config.toml is honoured by both. When the daemon
does not answer, ``down_hint`` says how to start it: through the units when they are installed,
or that they listen elsewhere (installed before the config changed) and must be written again.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SOCKET_UNIT = "provisiond.socket"


def unit_dir(environ: Mapping[str, str]) -> str:
    """Where user units live: ``$XDG_CONFIG_HOME/systemd/user`` (``~/.config/systemd/user``)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "systemd", "user")


def to_unit(path: str, environ: Mapping[str, str]) -> str:
    """``path`` as a unit file writes it: ``%t``/``%h`` where they apply, ``%`` escaped."""
    path = path.replace("%", "%%")
    for var, spec in (("XDG_RUNTIME_DIR", "%t"), ("HOME", "%h")):
        base = (environ.get(var) or "").rstrip("/").replace("%", "%%")
        if base and path.startswith(base + "/"):
            return spec + path[len(base):]
    return path


def from_unit(value: str, environ: Mapping[str, str]) -> str:
    """A unit's path with ``%t``, ``%h`` and ``%%`` expanded as systemd does for a user unit."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "%" and i + 1 < len(value):
            spec = value[i + 1]
            out.append({"t": environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}"),
                        "h": environ.get("HOME") or os.path.expanduser("~"), "%": "%"}.get(spec, "%" + spec))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def installed_socket(environ: Mapping[str, str]) -> str | None:
    """The socket the installed ``provisiond.socket`` listens on, or None when there is no unit."""
    try:
        with open(os.path.join(unit_dir(environ), SOCKET_UNIT), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "ListenStream" and value.strip():
            return from_unit(value.strip(), environ)
    return None


def down_hint(socket: str, environ: Mapping[str, str]) -> str:
    """What to do when nothing answers on ``socket``."""
    listening = installed_socket(environ)
    if listening is None:
        return "start it with: scripts/run   (or: provisiond &, or install the systemd units: " \
               "provisionctl daemon install-units)"
    if os.path.abspath(listening) == os.path.abspath(socket):
        return "start it with: systemctl --user start provisiond.socket   (the units are installed)"
    return (f"the installed {SOCKET_UNIT} listens on {listening}, but provisionctl uses {socket} (your config "
            "changed since): run provisionctl daemon install-units, then systemctl --user daemon-reload && "
            "systemctl --user restart provisiond.socket")
