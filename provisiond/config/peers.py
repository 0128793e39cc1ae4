"""Who is at the other end of the daemon's socket, and who could have put the socket there.

Like ssh-agent and gpg-agent, the daemon refuses a socket directory that another user owns or can
write (``check_socket_dir``), and clients talk only to a daemon running as their own uid
(``trusted``): another local user could otherwise start a fake daemon on a socket path we use and
answer ``provisionctl warm`` with a prefix of their own. Root is not trusted either: a user's
daemon runs as that user, and the daemon refuses every other uid (root included) in turn.

provisionctl's fast path imports this after connecting: ``os`` and ``sys`` only (already loaded).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def peer_uid(sock: Any) -> int | None:
    """The uid of the process that holds the other end of a connected AF_UNIX socket (None if unknown).

    SO_PEERCRED (Linux) gives the ``struct ucred`` of the peer as it was at connect/listen time:
    three native ints, pid, uid, gid.
    """
    import _socket

    option = getattr(_socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(_socket.SOL_SOCKET, option, 12)
    return int.from_bytes(creds[4:8], sys.byteorder)


def trusted(sock: Any, path: str) -> int | None:
    """None if the daemon on ``sock`` (connected to ``path``) runs as our uid, else the uid it runs as.

    Without SO_PEERCRED (not Linux), the owner of the socket file stands in for the peer's uid.
    """
    uid = peer_uid(sock)
    if uid is None:
        try:
            uid = os.stat(path).st_uid
        except OSError:
            return -1
    return None if uid == os.getuid() else uid


def untrusted_message(path: str, uid: int) -> tuple[str, str]:
    """The message and hint of the error a client raises for a daemon of another uid."""
    return (f"{path} is served by uid {uid}, not by you (uid {os.getuid()}): refusing to talk to it",
            "another user's process owns this socket; check --socket / PROVISIOND_SOCKET, "
            "and start your own provisiond on a socket in a directory only you can write")


def check_socket_dir(directory: Path) -> None:
    """Raise ConfigError unless ``directory`` is ours and no one else can write it or its parents.

    The directory itself: owned by us and not group- or world-writable (0700 when we create it).
    Its parents: owned by us or root, and world-writable only with the sticky bit (``/tmp``), so
    nobody can rename our directory away and put theirs in its place. (Group-writable parents are
    let through: with user private groups, a home made under umask 002 is 0775 and only ours.)
    """
    import stat

    from provisiond.domain.errors import ConfigError

    me = os.getuid()
    hint = "use a socket in a directory of your own with mode 0700 (the default under $XDG_RUNTIME_DIR)"
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode) and st.st_uid != me:
        raise ConfigError(f"socket directory {directory} is a symlink owned by uid {st.st_uid}, not by you "
                          f"(uid {me})", hint=hint)
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"socket directory {directory} is not a directory", hint=hint)
    if st.st_uid != me:
        raise ConfigError(f"socket directory {directory} is owned by uid {st.st_uid}, not by you (uid {me})",
                          hint=hint)
    if st.st_mode & 0o022:
        # A shared directory such as /tmp must stay shared: make a private one in it instead.
        fix = (f"make one of your own in it (mkdir -m 700 {directory / 'provisiond-'}$USER) and put the socket there"
               if st.st_mode & stat.S_ISVTX else f"chmod 700 {directory}, or {hint}")
        raise ConfigError(f"socket directory {directory} is writable by other users "
                          f"(mode {stat.S_IMODE(st.st_mode):04o})", hint=fix)
    for parent in directory.resolve().parents:
        st = os.stat(parent)
        if st.st_uid not in (me, 0) or (st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX):
            raise ConfigError(f"socket directory {directory}: its parent {parent} can be changed by other "
                              f"users (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})", hint=hint)
