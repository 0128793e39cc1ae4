"""Thin handlers: parse, call the Provisioner, answer JSON. The CLI mirrors these names."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from provisiond.daemon.api.request import INFO, PROVISIONER, read_json
from provisiond.daemon.builder import detailed_progress
from provisiond.domain.checks import check_named
from provisiond.domain.errors import BadRequestError, EnvNotFoundError
from provisiond.domain.urls import mask

routes = web.RouteTableDef()
OPENAPI = Path(__file__).with_name("openapi.json")


_BUILD_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits: str.isdigit() also accepts '²'
_NAME_MAX, _PATH_MAX = 255, 4096  # bytes, as Linux counts them (ENAMETOOLONG past either)


_CONTENT_MAX = 16 << 20  # an environment file or lockfile sent as text (create -f <(...))


def _str(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    return _text(value, key)


def _text(value: Any, key: str) -> str:
    """Every string a request brings in: non-empty, no NUL, at most 4096 characters, valid UTF-8."""
    if not isinstance(value, str) or not value or len(value) > _PATH_MAX or "\0" in value:
        raise BadRequestError(f"'{key}' must be a non-empty string (no NUL, at most 4096 characters)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no file name or database row holds it
        raise BadRequestError(f"'{key}' is not valid Unicode text (a lone surrogate)") from None
    return value


def _path(value: Any, key: str) -> str:
    """A file or directory path from a request: text, of a length Linux accepts, that resolves.

    Checked here, once, so that the core's ``Path.resolve()`` and ``stat()`` meet no
    ENAMETOOLONG, symlink loop or unencodable name; the original text is passed on.
    """
    text = _text(value, key)
    raw = os.fsencode(text)
    if len(raw) >= _PATH_MAX or any(len(part) > _NAME_MAX for part in raw.split(b"/")):
        raise BadRequestError(f"'{key}' {text[:120]!r}...: a path (or one of its parts) is too long",
                              hint=f"Linux allows {_NAME_MAX} bytes per name and {_PATH_MAX} per path")
    try:
        Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11), "~nobody/x"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadRequestError(f"'{key}' {text[:200]!r}: {reason}", hint="check the path") from None
    return text


def _target(text: str, key: str) -> str:
    """An env name, or a project's path (anything with a '/', as ``Provisioner._lookup`` reads it)."""
    return _path(text, key) if "/" in text or text in (".", "..") else _text(text, key)


def _name(request: web.Request) -> str:
    """The ``{name}`` of the URL: a name, or a project's path written with %2F."""
    return _target(request.match_info["name"], "name")


def _content(body: dict[str, Any]) -> str | None:
    """The text of a file only the client can read (``<(...)``), or None."""
    content = body.get("content")
    if content is not None and (not isinstance(content, str) or len(content) > _CONTENT_MAX or "\0" in content):
        raise BadRequestError("'content' must be the file's text (no NUL, at most 16 MiB)")
    return content


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"'{key}' must be true or false")
    return value


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    info = request.app[INFO]
    return web.json_response({"status": "ok", "pid": os.getpid(), **info})


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This API as an OpenAPI 3.1 document (the file beside this module; docs/openapi.json is a copy)."""
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    p, info = request.app[PROVISIONER], request.app[INFO]
    names = p.store.list_names()
    return web.json_response({
        **info,
        "pid": os.getpid(),
        "envs": len(names),
        "projects": sum(1 for n in names if n.kind == "project"),
        "store_envs": len(p.store.list_envs()),
        "builds_running": [b.to_wire() for b in p.store.list_builds("running")],
        "failed": [{"name": n.name, "error": n.error} for n in names if n.status == "failed"],
        "settings": p.settings.to_wire(),
    })


@routes.get("/v1/projects")
async def list_projects(request: web.Request) -> web.Response:
    return web.json_response({"projects": [v.to_wire() for v in request.app[PROVISIONER].list("project")]})


@routes.post("/v1/projects")
async def add_project(request: web.Request) -> web.Response:
    body = await read_json(request)
    p = request.app[PROVISIONER]
    view = await p.add_project(_path(body.get("path"), "path"), _str(body, "name", required=False),
                               allow=_bool(body, "allow"))
    if body.get("warm", True) is not False and view.status == "new":
        p.warm_in_background(view.name)
    return web.json_response(view.to_wire(), status=201)


@routes.delete("/v1/projects")
async def remove_project(request: web.Request) -> web.Response:
    """``?project=NAME|PATH``: a query parameter, because a path does not fit in a URL segment."""
    target = request.query.get("project")
    if not target:
        raise BadRequestError("missing query parameter 'project' (a name or a path)")
    return web.json_response(request.app[PROVISIONER].remove(_target(target, "project")).to_wire())


@routes.get("/v1/trust")
async def list_allowed(request: web.Request) -> web.Response:
    return web.json_response(request.app[PROVISIONER].gate.allowances())


@routes.post("/v1/trust")
async def allow(request: web.Request) -> web.Response:
    """Trust the current content of a project dir (or an env file), then build it."""
    body = await read_json(request)
    return web.json_response(await request.app[PROVISIONER].allow(_path(body.get("path"), "path")))


@routes.delete("/v1/trust")
async def deny(request: web.Request) -> web.Response:
    """``?path=DIR``: revoke an allowance (a query parameter, like DELETE /v1/projects)."""
    target = request.query.get("path")
    if not target:
        raise BadRequestError("missing query parameter 'path' (a project directory or an env file)")
    return web.json_response(request.app[PROVISIONER].gate.deny(_path(target, "path")))


@routes.get("/v1/envs")
async def list_envs(request: web.Request) -> web.Response:
    return web.json_response({"envs": [v.to_wire() for v in request.app[PROVISIONER].list()]})


@routes.post("/v1/envs")
async def create_env(request: web.Request) -> web.Response:
    body = await read_json(request)
    if _bool(body, "progress"):
        detailed_progress.set(True)
    content = _content(body)
    # With the content sent, `file` only names it (a pipe such as /dev/fd/63 that only the CLI can read).
    file = _text(body.get("file"), "file") if content is not None else _path(body.get("file"), "file")
    view = await request.app[PROVISIONER].create(
        file, _str(body, "name", required=False), update=_bool(body, "update"), content=content,
        force=_bool(body, "force"), environment=_str(body, "environment", required=False))
    return web.json_response(view.to_wire(), status=201)


@routes.post("/v1/check")
async def check(request: web.Request) -> web.Response:
    """``provisionctl check FILE``: the file read as a build would read it, named as the client wrote it."""
    body = await read_json(request)
    content = _content(body)
    file, path = _text(body.get("file"), "file"), _path(body.get("path"), "path")
    if not os.path.isabs(path):
        raise BadRequestError("'path' must be an absolute path (the client's working directory is not the daemon's)")
    environment = _str(body, "environment", required=False)
    p = request.app[PROVISIONER]
    # Off the loop: a large conda-lock.yml takes a second to parse.
    result = await asyncio.to_thread(check_named, file, path, content, environment, p.settings.default_channels)
    return web.json_response(result)


@routes.get("/v1/envs/{name}")
async def show_env(request: web.Request) -> web.Response:
    p = request.app[PROVISIONER]
    view = p.view(p.store.get_name(request.match_info["name"]).name)
    return web.json_response(view.to_wire())


@routes.get("/v1/envs/{name}/lock")
async def env_lock(request: web.Request) -> web.Response:
    lock = request.app[PROVISIONER].lock_of(request.match_info["name"])
    # The store keeps locks without channel credentials (docs/store.md); masked for older stores.
    return web.Response(text=mask(json.dumps(lock.to_wire())), content_type="application/json")


@routes.get("/v1/envs/{name}/sbom")
async def env_sbom(request: web.Request) -> web.Response:
    """The env as a CycloneDX 1.6 (default) or SPDX 2.3 JSON document (``?format=cyclonedx|spdx``)."""
    from provisiond.daemon.sbom import build

    p = request.app[PROVISIONER]
    record = p.find(_name(request))
    prefix = p.store.find_env(record.env_key) if record.env_key else None
    if prefix is None or not record.env_key:
        raise EnvNotFoundError(f"env {record.name!r} has not been built yet",
                               hint=f"run: provisionctl warm {record.name}")
    lock = p.store.read_lock(record.env_key)
    text = await asyncio.to_thread(build, record, lock, prefix, request.query.get("format", "cyclonedx"),
                                   p.settings.channel_alias)
    return web.Response(text=text, content_type="application/json")


@routes.post("/v1/envs/{name}/warm")
async def warm_env(request: web.Request) -> web.Response:
    body = await read_json(request)
    provisioner = request.app[PROVISIONER]
    if "text/plain" in request.headers.get("Accept", ""):
        # provisionctl's fast path (ctl.py): the prefix of an env that is ready as it is, or 204 and
        # nothing started, so that cli.main runs the warm with progress output.
        prefix = provisioner.ready_prefix(request.match_info["name"])
        return web.Response(text=prefix + "\n") if prefix else web.Response(status=204)
    if _bool(body, "progress"):
        detailed_progress.set(True)  # this handler's context: the build task it starts inherits it
    view = await provisioner.warm(_name(request), update=_bool(body, "update"))
    return web.json_response(view.to_wire())


@routes.post("/v1/envs/{name}/update")
async def update_env(request: web.Request) -> web.Response:
    body = await read_json(request)
    packages = body.get("packages", [])
    if not isinstance(packages, list) or len(packages) > 1000:
        raise BadRequestError("'packages' must be a list of package names")
    if _bool(body, "progress"):
        detailed_progress.set(True)
    view = await request.app[PROVISIONER].update(_name(request), [_text(p, "packages") for p in packages])
    return web.json_response(view.to_wire())


@routes.post("/v1/lock")
async def lock(request: web.Request) -> web.Response:
    body = await read_json(request)
    platforms = body.get("platforms", [])
    if not isinstance(platforms, list) or len(platforms) > 64:
        raise BadRequestError("'platforms' must be a list of platform names (linux-64, osx-arm64, ...)")
    platforms = [_platform(p) for p in platforms]
    output = body.get("output")
    answer = await request.app[PROVISIONER].lock(
        _target(_text(body.get("path"), "path"), "path"), platforms, check=_bool(body, "check"),
        output=_path(output, "output") if output is not None else None)
    return web.json_response(answer)


def _platform(value: Any) -> str:
    import rattler
    from rattler.exceptions import ParseSubdirError

    text = _text(value, "platforms")
    try:
        return str(rattler.Subdir(text))
    except ParseSubdirError:
        raise BadRequestError(f"unknown platform {text[:60]!r}",
                              hint="e.g. linux-64, linux-aarch64, osx-64, osx-arm64, win-64") from None


@routes.post("/v1/envs/{name}/clone")
async def clone_env(request: web.Request) -> web.Response:
    body = await read_json(request)
    view = request.app[PROVISIONER].clone(_name(request), _str(body, "target") or "")
    return web.json_response(view.to_wire(), status=201)


@routes.post("/v1/envs/{name}/cancel")
async def cancel_builds(request: web.Request) -> web.Response:
    await read_json(request)
    name = _name(request)
    return web.json_response({"name": name, "cancelled": request.app[PROVISIONER].cancel(name)})


@routes.delete("/v1/envs/{name}")
async def remove_env(request: web.Request) -> web.Response:
    view, deleted = await request.app[PROVISIONER].remove_env(_name(request))
    return web.json_response({**view.to_wire(), "env_deleted": deleted})


def _flag(request: web.Request, key: str) -> bool:
    return request.query.get(key, "").lower() in ("1", "true", "yes")


@routes.get("/v1/envs/{name}/export")
async def export_env(request: web.Request) -> web.Response:
    text = request.app[PROVISIONER].export(
        _name(request), fmt=request.query.get("format", "yml"),
        no_builds=_flag(request, "no_builds"), from_history=_flag(request, "from_history"))
    return web.Response(text=text, content_type="text/plain")


@routes.get("/v1/kernels")
async def list_kernels(request: web.Request) -> web.Response:
    """The Jupyter kernelspecs written for ready envs holding ipykernel (daemon/kernels.py)."""
    return web.json_response(request.app[PROVISIONER].lifecycle.kernels.listing())


@routes.get("/v1/audit")
async def audit(request: web.Request) -> web.Response:
    """Findings of the live envs (``?env=NAME|PATH`` one of them) against the OSV database
    (``?db=PATH`` another one), optionally of one ``?package=NAME``."""
    p, query = request.app[PROVISIONER], request.query
    target = p.find(_target(query["env"], "env")) if "env" in query else None
    db = _path(query["db"], "db") if "db" in query else None
    package = _text(query["package"], "package") if "package" in query else None
    return web.json_response(await p.auditor.report(target=target, db=db, package=package))


@routes.post("/v1/gc")
async def collect_garbage(request: web.Request) -> web.Response:
    body = await read_json(request)
    days, budget = body.get("older_than_days"), body.get("cache_budget_bytes")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                             or not math.isfinite(days) or days < 0):
        raise BadRequestError("'older_than_days' must be a finite number of days, 0 or more")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise BadRequestError("'cache_budget_bytes' must be an integer, 0 or more")
    report = await request.app[PROVISIONER].gc(dry_run=_bool(body, "dry_run"), older_than_days=days,
                                               cache_budget_bytes=budget)
    return web.json_response(report)


@routes.get("/v1/builds")
async def list_builds(request: web.Request) -> web.Response:
    builds = request.app[PROVISIONER].store.list_builds(request.query.get("status"))
    return web.json_response({"builds": [b.to_wire() for b in builds]})


def _build_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not _BUILD_ID.fullmatch(raw) or not 0 < int(raw) < 2**63:
        raise BadRequestError(f"build id {raw[:40]!r} is not a build number")
    return int(raw)


@routes.get("/v1/builds/{id}")
async def show_build(request: web.Request) -> web.Response:
    return web.json_response(request.app[PROVISIONER].store.get_build(_build_id(request)).to_wire())


@routes.get("/v1/builds/{id}/events")
async def build_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every phase of a build, past ones first, until done or failed."""
    provisioner = request.app[PROVISIONER]
    build = provisioner.store.get_build(_build_id(request))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    if provisioner.events.known(build.id):
        events = provisioner.events.follow(build.id)
    else:  # a build of an earlier daemon run: its outcome is all there is
        phase = {"succeeded": "done", "cancelled": "cancelled"}.get(build.status, "failed")
        events = _aiter([{"phase": phase, "build_id": build.id, "error": build.error}])
    async for event in events:
        await response.write(f"event: {event['phase']}\ndata: {json.dumps(event)}\n\n".encode())
    await response.write_eof()
    return response


async def _aiter(items: list[dict[str, Any]]) -> Any:
    for item in items:
        yield item


@routes.get("/v1/builds/{id}/log")
async def build_log(request: web.Request) -> web.Response:
    build = request.app[PROVISIONER].store.get_build(_build_id(request))
    try:
        with open(build.log, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    return web.Response(text=text, content_type="text/plain")
