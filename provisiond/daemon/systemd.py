"""systemd integration without libsystemd: socket activation (LISTEN_FDS), sd_notify, unit files."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

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


def unit_files(exe: str) -> dict[str, str]:
    """The user units: a socket (activation, 0600) and a notify service that keeps its state."""
    socket_unit = """\
[Unit]
Description=provisiond socket: conda environments on demand

[Socket]
ListenStream=%t/provisiond/provisiond.sock
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""
    service_unit = f"""\
[Unit]
Description=provisiond: builds and serves conda environments from environment.yml
Documentation=file://{Path(__file__).resolve().parents[2] / "docs" / "systemd.md"}
Requires=provisiond.socket
After=provisiond.socket

[Service]
Type=notify
ExecStart={exe} --socket %t/provisiond/provisiond.sock
# systemctl --user reload provisiond: re-read config.toml, reopen the log file (docs/operations.md).
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
# 78 (EX_CONFIG): a bad configuration does not get better by restarting.
RestartPreventExitStatus=78
TimeoutStopSec=30
UMask=0077

[Install]
WantedBy=default.target
"""
    return {"provisiond.socket": socket_unit, "provisiond.service": service_unit}


def install_units(exe: str, directory: Path) -> list[Path]:
    """Write the units into ``directory`` (default ~/.config/systemd/user); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in unit_files(exe).items():
        path = directory / name
        write_atomic(path, text, 0o644)  # units hold no secret; systemd reads them as the user
        written.append(path)
    return written
