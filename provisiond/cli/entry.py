"""provisionctl's entry point, with fast paths for what shells and scripts call all the time.

- ``warm NAME`` of a ready env: one request on a raw ``_socket``; the daemon sends the prefix as text.
- ``activate PATH`` of a ready project: its pre-rendered script, read from the per-user state dir;
  ``activate NAME``: the name's script in the store (a project's name: the project's script).
- ``run NAME -- CMD`` of a ready env: a lease, then exec through the store's ``activate.sh``.
- ``watch --if-allowed DIR``: the shell hook's one call when it enters a project with no env.

All three skip argparse, json, pathlib and the socket module. Anything else (other commands, other
options, errors, an env that is not ready) goes to ``cli.main``, which renders it the usual way.
"""

from __future__ import annotations

import os
import sys

from provisiond.config import layout  # strings and os.path only


def _fast_warm(argv: list[str]) -> int | None:
    """Handle ``[--socket S | --home H] warm NAME``; None means "not handled, use cli.main"."""
    flags: dict[str, str] = {}
    while len(argv) >= 2 and argv[0] in ("--socket", "--home"):
        flags[argv[0][2:]] = argv[1]
        argv = argv[2:]
    if len(argv) != 2 or argv[0] != "warm":
        return None
    name = argv[1]
    # Paths register projects, odd names need URL quoting: both are cli.main's job.
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name in (".", "..") \
            or os.path.exists(name):
        return None
    from provisiond.config.locations import Sources

    try:
        path = Sources(flags, os.environ).socket()
    except Exception:
        return None
    answer, _foreign = _exchange(path, f"POST /v1/envs/{name}/warm HTTP/1.1\r\nHost: provisiond\r\n"
                                       "Connection: close\r\nAccept: text/plain\r\nContent-Type: application/json\r\n"
                                       "Content-Length: 2\r\n\r\n{}".encode())
    if answer is None:
        return None  # down, or another user's socket: cli.main's client says which
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 ") or b"text/plain" not in head.lower() or not body.strip():
        return None  # an error or no prefix yet: cli.main asks again and renders the answer
    sys.stdout.write(body.decode())
    return 0


def _project_dir(path: str) -> str | None:
    """The nearest directory at or above ``path`` holding an environment file, by its real path
    (as the daemon knows projects), like ``activation.find_project_dir``."""
    from provisiond.config.locations import SPEC_FILES

    directory = os.path.realpath(path)
    while True:
        if any(os.path.isfile(os.path.join(directory, name)) for name in SPEC_FILES):
            return directory
        if directory == "/":
            return None
        directory = os.path.dirname(directory)


def _exec_sourcing(script: str, command: list[str]) -> None:
    """exec /bin/sh to source ``script`` and exec ``command`` (exit codes and signals pass through)."""
    import _signal  # type: ignore[import-not-found]  # (no stub) Python ignores SIGPIPE and SIGXFSZ; ignored signals would survive exec

    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv("/bin/sh", ["/bin/sh", "-c", '. "$1"; shift; exec "$@"', "provisionctl", script, *command])


def _fast_activate(argv: list[str]) -> int | None:
    """Handle ``[--socket S | --home H] activate NAME|PATH [--shell S]`` of a ready env or project."""
    flags: dict[str, str] = {}
    while len(argv) >= 2 and argv[0] in ("--socket", "--home"):
        flags[argv[0][2:]] = argv[1]
        argv = argv[2:]
    shell = os.path.basename(os.environ.get("SHELL", ""))
    if len(argv) == 4 and argv[2] == "--shell":
        shell, argv = argv[3], argv[:2]
    if len(argv) != 2 or argv[0] != "activate" or not argv[1] or argv[1].startswith("-") or "\0" in argv[1]:
        return None
    shell = shell if shell in ("bash", "zsh", "fish", "sh", "json") else "sh"
    target = argv[1]
    from provisiond.config.locations import Sources

    sources = Sources(flags, os.environ)
    if "/" in target or target in (".", "..") or (os.path.exists(target) and not target.isidentifier()):
        directory = _project_dir(target)  # as cli.commands tells a path from a name
        if directory is None:
            return None
    else:
        directory = None
        try:
            home = sources.home()
        except Exception:
            return None
        env = _name_target(home, target)
        if env is None:
            return None  # unknown, not built, or its env is gone: cli.main asks the daemon
        names = layout.name_dir(home, target)
        try:
            with open(os.path.join(names, layout.NAME_PROJECT), encoding="utf-8") as f:
                directory = f.read().rstrip("\n") or None
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError):
            return None
        if directory is None:
            return _print_file(os.path.join(names, f"activate.{shell}"))
    try:
        state = sources.state()
    except Exception:
        return None
    return _print_file(f"{layout.project_dir(state, directory)}/activate.{shell}")  # not built: cli.main warms it


def _name_target(home: str, name: str) -> tuple[str, str] | None:
    """(env_key, prefix) of a name whose env is published (its marker is there), else None."""
    target = {}
    try:
        with open(os.path.join(layout.name_dir(home, name), layout.NAME_TARGET), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                target[key] = value
    except (OSError, UnicodeDecodeError):
        return None
    env_key, prefix = target.get("env_key", ""), target.get("prefix", "")
    if not env_key or not os.path.isfile(os.path.join(prefix, layout.MARKER)):
        return None
    return env_key, prefix


def _print_file(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            sys.stdout.write(f.read())
    except (OSError, UnicodeDecodeError):
        return None
    return 0


def _fast_run(argv: list[str]) -> int | None:
    """Handle ``[--socket S | --home H] run NAME -- CMD...`` of a ready env: exec, through its activate.sh.

    What ``scripts/cold-start`` does, from the store's name activation (layout.py has the layout):
    take a lease (exec keeps our pid), then ``/bin/sh`` sources the script and execs CMD. Returns
    None (cli.main's turn) for a project path, an env that is not ready or was built elsewhere.
    """
    flags: dict[str, str] = {}
    while len(argv) >= 2 and argv[0] in ("--socket", "--home"):
        flags[argv[0][2:]] = argv[1]
        argv = argv[2:]
    if len(argv) < 4 or argv[0] != "run" or argv[2] != "--":
        return None
    name, command = argv[1], argv[3:]
    from provisiond.config.locations import Sources

    if "/" in name or name in (".", "..") or (os.path.exists(name) and not name.isidentifier()):
        return _fast_run_project(flags, name, command)

    try:
        home = Sources(flags, os.environ).home()
    except Exception:
        return None
    names = layout.name_dir(home, name)
    target = {}
    try:
        with open(os.path.join(names, layout.NAME_TARGET), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                target[key] = value
    except (OSError, UnicodeDecodeError):
        return None
    env_key, prefix = target.get("env_key", ""), target.get("prefix", "")
    if not env_key:
        return None
    lease = layout.lease(home, env_key, os.getpid())
    try:
        os.makedirs(os.path.dirname(lease), exist_ok=True)
        os.close(os.open(lease, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        pass  # a read-only store (an image) has no collector to guard against
    script = os.path.join(names, "activate.sh")
    # Checked after taking the lease, so that a collection cannot remove the env in between.
    if not os.path.isfile(os.path.join(prefix, layout.MARKER)) or not os.path.isfile(script):
        try:
            os.unlink(lease)
        except OSError:
            pass
        return None
    try:
        _exec_sourcing(script, command)
    except OSError:
        return None
    return None  # not reached: exec replaced us


def _fast_run_project(flags: dict[str, str], path: str, command: list[str]) -> int | None:
    """``run PATH -- CMD`` of a ready project: its activation (with .env values) sets the env, and
    takes the lease for our pid, which exec keeps."""
    from provisiond.config.locations import Sources

    directory = _project_dir(path)
    if directory is None:
        return None
    try:
        state = Sources(flags, os.environ).state()
    except Exception:
        return None
    base = layout.project_dir(state, directory)
    if not (os.path.isfile(f"{base}/{layout.STAMP}") and os.path.isfile(f"{base}/activate.sh")):
        return None  # not built yet: cli.main warms it first
    try:
        _exec_sourcing(f"{base}/activate.sh", command)
    except OSError:
        return None
    return None  # not reached


def _hook_watch(argv: list[str]) -> int | None:
    """Handle ``[--socket S | --home H] watch --if-allowed DIR``: what the shell hook runs, once, when
    it enters a project with no env. Prints the one line the user sees (preparing, blocked, broken
    file, daemon down) to stderr; exits 0 once the daemon answered, 69 when it is not running."""
    flags: dict[str, str] = {}
    while len(argv) >= 2 and argv[0] in ("--socket", "--home"):
        flags[argv[0][2:]] = argv[1]
        argv = argv[2:]
    if len(argv) != 3 or argv[:2] != ["watch", "--if-allowed"]:
        return None
    directory = argv[2]
    from provisiond.config.locations import Sources

    try:
        path = Sources(flags, os.environ).socket()
    except Exception as exc:
        sys.stderr.write(f"provisiond: {getattr(exc, 'message', exc)}\n")
        return 0
    import json

    body = json.dumps({"path": os.path.realpath(directory), "allow": False}).encode()
    answer = _post(path, "/v1/projects", body)
    code = 0
    if isinstance(answer, str):
        line = answer  # another user's socket
    elif answer is None:
        code = os.EX_UNAVAILABLE  # the hook asks again on the next visit
        line = (f"the daemon is not running (no answer on {path}), so {directory} has no env; "
                "start it: provisiond, or systemctl --user start provisiond.socket")
    else:
        status, text = answer
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
        error = data.get("error") if isinstance(data, dict) else None
        if 200 <= status < 300 and isinstance(data, dict):
            if data.get("status") == "ready":
                return 0  # activates at the next prompt
            line = f"preparing the env of {directory}; it activates at a prompt once ready"
        elif isinstance(error, dict) and error.get("code") == "project-blocked":
            line = str(error.get("message", "")).removeprefix("provisiond: ")
        else:
            error = error if isinstance(error, dict) else {}
            hint = f"; {error['hint']}" if error.get("hint") else ""
            line = f"{directory}: {error.get('message', f'HTTP {status}')}{hint}"
    sys.stderr.write(f"provisiond: {line}\n")
    return code


def _post(socket_path: str, target: str, body: bytes) -> tuple[int, bytes] | str | None:
    """One JSON POST to the daemon: (status, body); None when nothing answers; a message when the
    socket is served by another user (nothing was sent to it)."""
    answer, foreign = _exchange(socket_path, f"POST {target} HTTP/1.1\r\nHost: provisiond\r\nConnection: close\r\n"
                                             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                                             .encode() + body)
    if foreign is not None:
        from provisiond.config.peers import untrusted_message

        return untrusted_message(socket_path, foreign)[0]
    if answer is None:
        return None
    head, _, payload = answer.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, payload  # aiohttp's json_response always sends a Content-Length


def _exchange(socket_path: str, request: bytes) -> tuple[bytes | None, int | None]:
    """Send one HTTP/1.1 request (``Connection: close``) on the daemon's socket and read the answer.

    Returns (answer, None); (None, None) when nothing answers; (None, uid) when the socket is served
    by another uid: the request is never sent to a daemon that is not ours (peers.py).
    """
    import _socket  # the C module: `socket` would pull in enum and selectors

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(30)
        sock.connect(socket_path)
        from provisiond.config.peers import trusted

        foreign = trusted(sock, socket_path)
        if foreign is not None:
            return None, foreign
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    except OSError:
        return None, None
    finally:
        sock.close()
    return b"".join(chunks), None


def run() -> None:
    """Console entry point. `check` imports rattler, which can crash at exit: leave via os._exit."""
    code = _fast_warm(sys.argv[1:])
    if code is None:
        code = _fast_activate(sys.argv[1:])
    if code is None:
        code = _fast_run(sys.argv[1:])
    if code is None:
        code = _hook_watch(sys.argv[1:])
    if code is None:
        from provisiond.cli.commands import main

        code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
