"""What a handler takes from its request: the app's typed keys, and the JSON body read within a deadline.

Both ``app.py`` (which fills the keys) and ``routes.py`` (which reads them) import this module, so
neither imports the other's internals.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from provisiond.daemon.api.protocol import Limits
from provisiond.daemon.provisioner import Provisioner
from provisiond.domain.errors import BadRequestError, RequestTimeoutError

__all__ = ["INFO", "LIMITS", "PROVISIONER", "read_json"]

PROVISIONER = web.AppKey("provisioner", Provisioner)
INFO = web.AppKey("info", dict[str, Any])
LIMITS = web.AppKey("limits", Limits)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; read within ``read_timeout`` (a stalled client gets a 408)."""
    if not request.can_read_body:
        return {}
    try:
        async with asyncio.timeout(request.app[LIMITS].read_timeout):
            data = await request.read()
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {request.app[LIMITS].read_timeout:g} s",
                                  hint="send the whole body at once") from None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested ~1000 deep
        raise BadRequestError("the request body is not JSON (or is nested too deeply)") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body
