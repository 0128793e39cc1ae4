"""systemd integration without libsystemd: socket activation (LISTEN_FDS), sd_notify, unit files."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from provisiond.config.units import to_unit
from provisiond.domain.errors import ConfigError
from provisiond.store.files import write_atomic

SD_LISTEN_FDS_START = 3


def listen_socket(environ: Mapping[str, str]) -> socket.socket | None:
    """The Unix socket systemd passed us (sd_listen_fds(3)), or None when not socket-activated."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None  # the variables were meant for another process (e.g. our parent)
    count = int(environ.get("LISTEN_FDS", "0") or 0)
    if count < 1:
        return None
    # One socket unit, one ListenStream: fd 3. Extra fds would be a unit misconfiguration.
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as exc:
        raise ConfigError(f"LISTEN_FDS={count}, but fd {SD_LISTEN_FDS_START} is not a socket: {exc.strerror}",
                          hint="check the ListenStream= of provisiond.socket") from None
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), False)
    return sock


def notify(message: str, environ: Mapping[str, str]) -> bool:
    """Send an sd_notify(3) message (READY=1, STOPPING=1, STATUS=…); False when not under systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


UNITS = Path(__file__).with_name("units")  # copies of the repository's systemd/ (a test keeps them equal)


def unit_files(exe: str, socket_path: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The user units from their templates: a socket (activation, 0600) and a notify service, both
    on ``socket_path``, the socket provisionctl uses (``config/units.py``)."""
    socket = to_unit(socket_path, environ)
    if any(c.isspace() for c in socket) or any(c.isspace() for c in exe):
        raise ConfigError(f"cannot write a unit for {socket_path!r} or {exe!r}: the path has a space",
                          hint="set a socket path without spaces (socket = ... in config.toml)")
    docs = "file://" + str(Path(__file__).resolve().parents[2] / "docs" / "systemd.md")
    values = {"@EXE@": exe, "@SOCKET@": socket, "@DOCS@": docs}
    units = {}
    for name in ("provisiond.socket", "provisiond.service"):
        text = (UNITS / name).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        units[name] = text
    return units


def install_units(exe: str, directory: Path, socket_path: str, environ: Mapping[str, str]) -> list[Path]:
    """Write the units into ``directory`` (default ~/.config/systemd/user); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in unit_files(exe, socket_path, environ).items():
        path = directory / name
        write_atomic(path, text, 0o644)  # units hold no secret; systemd reads them as the user
        written.append(path)
    return written


def check_inherited(sock: socket.socket, expected: Path) -> str | None:
    """A warning when systemd's socket is not where provisionctl looks (a unit edited by hand)."""
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if isinstance(name, str) and name and os.path.abspath(name) != os.path.abspath(expected):
        return (f"systemd passed a socket at {name}, but this configuration uses {expected}: "
                "provisionctl will not find it (run provisionctl daemon install-units again)")
    return None
