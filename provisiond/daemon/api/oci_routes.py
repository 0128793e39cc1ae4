"""Routes of the registry operations (daemon/oci): push, pull, image, and their progress events.

Each POST runs one operation. With ``Accept: text/event-stream`` it answers with the operation's
server-sent events as they happen, ending with ``done`` (its answer in ``result``) or ``failed``
(its ``error``); otherwise with the answer as JSON once it is over. ``GET
/v1/transfers/{id}/events`` follows an operation from another connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from provisiond.daemon.api.request import PROVISIONER, read_json
from provisiond.daemon.api.routes import _bool, _name, _str, _text
from provisiond.domain.errors import BadRequestError
from provisiond.domain.events import BuildProgress
from provisiond.domain.oci import TransferNotFoundError

routes = web.RouteTableDef()

_MIN_CHUNK, _MAX_CHUNK = 1 << 10, 1 << 30


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or len(value) > 64:
        raise BadRequestError(f"'{key}' must be a list of at most 64 strings")
    return [_text(v, key) for v in value]


def _flags(body: dict[str, Any]) -> dict[str, bool]:
    return {"plain_http": _bool(body, "plain_http"), "insecure": _bool(body, "insecure")}


async def _run(request: web.Request, work: Callable[[BuildProgress], Awaitable[dict[str, Any]]],
               status: int = 200) -> web.StreamResponse:
    transfers = request.app[PROVISIONER].oci
    op_id, task = transfers.start(work)
    if "text/event-stream" not in request.headers.get("Accept", ""):
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()  # the client went away: so does the work (a pull's build is shared and goes on)
            raise
        return web.json_response({**result, "transfer_id": op_id}, status=status)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        await _send(response, {"phase": "started", "transfer_id": op_id})
        async for event in transfers.events.follow(op_id):
            await _send(response, event)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await response.write_eof()
    return response


async def _send(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(f"event: {event['phase']}\ndata: {json.dumps(event)}\n\n".encode())


def _chunk_size(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("chunk_size")
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, int) or not _MIN_CHUNK <= value <= _MAX_CHUNK:
        raise BadRequestError(f"'chunk_size' must be an integer of bytes, {_MIN_CHUNK} to {_MAX_CHUNK}")
    return {"chunk_size": value}


@routes.post("/v1/envs/{name}/push")
async def push(request: web.Request) -> web.StreamResponse:
    """Push a named env to an OCI registry: ``reference`` (HOST[:PORT]/REPO[:TAG]), ``tags``, ``mount_from``."""
    body = await read_json(request)
    name, reference = _name(request), _str(body, "reference") or ""
    tags, mount_from = _strings(body, "tags"), _strings(body, "mount_from")
    flags, chunk = _flags(body), _chunk_size(body)
    transfers = request.app[PROVISIONER].oci
    return await _run(request, lambda progress: transfers.push(name, reference, progress, tags=tags,
                                                               mount_from=mount_from, **flags, **chunk))


@routes.post("/v1/pull")
async def pull(request: web.Request) -> web.StreamResponse:
    """Pull an env pushed with ``push`` (``reference``), build it offline, and name it (``name``)."""
    body = await read_json(request)
    reference, name, flags = _str(body, "reference") or "", _str(body, "name", required=False), _flags(body)
    transfers = request.app[PROVISIONER].oci
    return await _run(request, lambda progress: transfers.pull(reference, name, progress, **flags), status=201)


@routes.post("/v1/envs/{name}/image")
async def image(request: web.Request) -> web.StreamResponse:
    """Write a runnable image of a named env: ``base`` image + env + cold-start, pushed as ``tag``."""
    body = await read_json(request)
    name, base, tag, flags = _name(request), _str(body, "base") or "", _str(body, "tag") or "", _flags(body)
    transfers = request.app[PROVISIONER].oci
    return await _run(request, lambda progress: transfers.image(name, base, tag, progress, **flags), status=201)


@routes.get("/v1/transfers/{id}/events")
async def transfer_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of a push, pull or image operation of this daemon's life."""
    raw = request.match_info["id"]
    events = request.app[PROVISIONER].oci.events
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or not events.known(int(raw)):
        raise TransferNotFoundError(f"no transfer {raw[:40]!r} in this daemon's life",
                                    hint="ids come from the POST that started it (transfer_id)")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    async for event in events.follow(int(raw)):
        await _send(response, event)
    await response.write_eof()
    return response

