"""make_app(): the one error middleware, the peer-uid check, and serving on a Unix socket."""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from provisiond.daemon.api.oci_routes import routes as oci_routes
from provisiond.daemon.api.protocol import MAX_BODY_BYTES, Limits, Runner
from provisiond.daemon.api.request import INFO, LIMITS, PROVISIONER
from provisiond.daemon.api.routes import routes
from provisiond.daemon.provisioner import Provisioner
from provisiond.domain.errors import ConfigError, ProvisionError

log = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error: dict[str, Any]) -> web.Response:
    return web.json_response({"error": error}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ProvisionError → JSON with a stable code; unknown routes → JSON 404/405; never a traceback."""
    try:
        return await handler(request)
    except ProvisionError as exc:
        if exc.http_status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc.http_status, exc.to_wire())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status, "bad-request")
        hint = "request bodies are at most 1 MiB of JSON" if exc.status == 413 else "see docs/api.md for the routes"
        return error_response(exc.status, {"code": code, "message": f"{request.method} {request.path}: {exc.reason}",
                                           "hint": hint})
    except Exception as exc:  # a full disk (507), else a bug: logged with its traceback, never sent
        full = request.app[PROVISIONER].store.disk_full(exc)
        if full is not None:
            log.error("%s %s: %s", request.method, request.path, full.message)
            return error_response(full.http_status, full.to_wire())
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, {"code": "internal", "message": f"{request.method} {request.path}: internal error",
                                    "hint": "this is a bug in provisiond; its log has the details"})


@web.middleware
async def peer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse peers of another uid (SO_PEERCRED), in addition to the socket's 0600 mode."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return error_response(403, {"code": "forbidden", "message": f"uid {uid} may not use this daemon",
                                        "hint": "each user runs their own provisiond"})
    return await handler(request)


def _answers(path: Path) -> bool:
    """Does something accept connections on this Unix socket?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def make_app(provisioner: Provisioner, info: dict[str, Any]) -> web.Application:
    app = web.Application(middlewares=[peer_middleware, errors_middleware], client_max_size=MAX_BODY_BYTES)
    app[PROVISIONER] = provisioner
    app[INFO] = info
    app[LIMITS] = Limits(provisioner.settings.max_connections, provisioner.settings.read_timeout)
    app.add_routes(routes)
    app.add_routes(oci_routes)
    return app


@asynccontextmanager
async def serving(app: web.Application, socket_path: Path, sock: socket.socket | None = None) -> AsyncIterator[None]:
    """Serve ``app`` on a Unix socket: dir 0700, socket 0600; or on an inherited socket (systemd)."""
    runner = Runner(app, app[LIMITS])
    await runner.setup()
    bound = False  # remove the socket file on the way out only if it is ours
    try:
        if sock is not None:
            site: web.BaseSite = web.SockSite(runner, sock)
        else:
            from provisiond.config.peers import check_socket_dir

            socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_socket_dir(socket_path.parent)  # planted or shared: refuse, as ssh-agent does
            if socket_path.is_socket():
                if _answers(socket_path):  # a daemon of another store, given the same --socket
                    raise ConfigError(f"{socket_path} is in use by another provisiond",
                                      hint="give each store its own --socket")
                socket_path.unlink()  # a leftover of a daemon that died
            elif os.path.lexists(socket_path):
                raise ConfigError(f"{socket_path} exists and is not a socket",
                                  hint="remove it, or choose another --socket")
            site = web.UnixSite(runner, str(socket_path))
        old_umask = os.umask(0o177)
        try:
            await site.start()
        finally:
            os.umask(old_umask)
        if sock is None:
            bound = True
            os.chmod(socket_path, 0o600)
        yield
    finally:
        await runner.cleanup()
        if bound:
            try:
                socket_path.unlink()
            except FileNotFoundError:
                pass
