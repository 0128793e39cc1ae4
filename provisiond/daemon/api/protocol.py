"""The HTTP connection layer under the app: malformed requests, stalled clients, too many connections.

aiohttp answers a request it cannot parse before any middleware runs, in plain text, and logs
a traceback (aio-libs/aiohttp#3287, #9882); the only hook is ``RequestHandler.handle_error``. So
the runner builds aiohttp's own ``Server`` and ``RequestHandler`` through two small subclasses:
the error becomes our JSON envelope, and a connection over the limit gets a JSON 503 and is closed.
Timeouts are aiohttp's own knobs: ``keepalive_timeout`` runs from the moment a connection opens
until a complete request head has arrived (and again between requests), so a client that sends
half a head and stalls is disconnected; body reads are bounded in ``request.read_json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

# Request-line and header limits: the client sends short paths; a lockfile path is at most 4 KiB.
MAX_LINE_SIZE = 16 << 10
MAX_FIELD_SIZE = 8 << 10
MAX_HEADERS = 64
MAX_BODY_BYTES = 1 << 20  # JSON bodies name files; they never carry them


@dataclass(frozen=True, slots=True)
class Limits:
    """Connections open at once, and seconds to send a request's head or body (Settings fields)."""

    max_connections: int
    read_timeout: float


def error_body(code: str, message: str, hint: str | None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "hint": hint}}).encode()


class _Protocol(RequestHandler):
    """aiohttp's connection handler, with our error envelope and the connection limit."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        if isinstance(server, _Server) and len(server.connections) >= server.limits.max_connections:
            self._refuse(transport, server.limits.max_connections)
            return
        super().connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport, limit: int) -> None:
        assert isinstance(transport, asyncio.Transport)
        body = error_body("busy", f"provisiond has {limit} connections open, its limit",
                          "close idle connections, or raise max_connections (docs/configuration.md)")
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        log.warning("refused a connection: %d open", limit)
        # Half-close, then drop what the client sends until it closes: closing with its request
        # unread would turn our answer into a reset on the client's side.
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, transport.close)
        self._manager = None  # connection_lost has nothing of ours to clean up
        self._force_close = True  # data_received drops everything

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse (or a handler that escaped the middleware): JSON, no traceback."""
        if request.writer.output_size > 0:  # as aiohttp: an answer has started, the connection is broken
            raise ConnectionError("an answer was already sent")
        if status >= 500:
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
            code, text, hint = "internal", "internal error", "this is a bug in provisiond; its log has the details"
        else:
            detail = getattr(exc, "message", None) or message or "malformed request"
            first = (str(detail).strip().splitlines() or ["?"])[0][:200].rstrip(":")
            code, text = "bad-request", f"malformed HTTP request: {first}"
            log.debug("%s", text)
            hint = "send HTTP/1.1 with a JSON body; see docs/api.md"
        response = web.Response(status=status, body=error_body(code, text, hint), content_type="application/json")
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` serving through ``_Protocol``, with our limits and timeouts."""

    def __init__(self, app: web.Application, limits: Limits) -> None:
        super().__init__(app, access_log=None, handle_signals=False, keepalive_timeout=limits.read_timeout,
                         lingering_time=limits.read_timeout, max_line_size=MAX_LINE_SIZE,
                         max_field_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        built = await super()._make_server()  # the app's startup, and aiohttp's choice of arguments
        return _Server(built.request_handler, request_factory=built.request_factory,
                       handler_cancellation=built.handler_cancellation, loop=built._loop,
                       limits=self.limits, **built._kwargs)
