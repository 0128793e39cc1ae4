"""provisionctl push, pull and image: envs through an OCI registry (docs/registry.md).

With ``--json`` the answer is printed as the daemon gives it; otherwise progress goes to stderr
(one line redrawn on a terminal, a line per blob otherwise) while the operation's events stream.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from provisiond.cli.client import Client, segment
from provisiond.domain.errors import ProvisionError
from provisiond.domain.oci import parse_reference  # light and pure; registers our error codes too


def _client(args: argparse.Namespace) -> Client:
    return Client(args.settings.paths.socket)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"plain_http": args.plain_http, "insecure": args.insecure}


def _run(args: argparse.Namespace, path: str, body: dict[str, Any]) -> Any:
    client = _client(args)
    if args.json:
        return client.post(path, body)
    return follow(client.stream(path, body), sys.stderr.isatty())


def follow(lines: Any, tty: bool, out: Any = None) -> Any:
    """Print an operation's events; return its answer, or raise its error."""
    out = out or sys.stderr
    drawn = False
    for line in lines:
        if not line.startswith("data: "):
            continue
        event = json.loads(line[len("data: "):])
        phase = event.get("phase")
        if phase == "done":
            if drawn:
                out.write("\r\033[K")
            return event["result"]
        if phase == "failed":
            if drawn:
                out.write("\r\033[K")
            raise ProvisionError.from_wire(event.get("error") or {})
        text = _describe(event)
        if text is None:
            continue
        if tty:
            out.write(f"\r\033[K{text}")
            drawn = True
        elif phase != "bytes":
            out.write(text + "\n")
        out.flush()
    raise ProvisionError("provisiond ended the operation without an answer", hint="see its log")


def _describe(event: dict[str, Any]) -> str | None:
    phase = event.get("phase")
    mib = f"{event.get('bytes', 0) / 1048576:.1f}/{event.get('total', 0) / 1048576:.1f} MiB"
    if phase == "start":
        return f"{event.get('blobs', 0)} blobs" + (f", {event['skipped']} cached" if event.get("skipped") else "")
    if phase == "blob":
        return f"[{event.get('done')}/{event.get('blobs')}] {event.get('action')} {event.get('file', '')}  {mib}"
    if phase == "bytes":
        return f"[{event.get('done')}/{event.get('blobs')}] {mib}"
    if phase == "build":
        return f"building {event.get('packages', 0)} packages offline"
    if phase == "layer":
        return f"writing the {event.get('layer')} layer"
    return None


def cmd_push(args: argparse.Namespace) -> Any:
    parse_reference(args.reference)  # a bad reference fails here, before the daemon is asked
    from provisiond.cli.commands import _project_name

    name = _project_name(_client(args), args.target)
    body = {"reference": args.reference, "tags": args.tag or [], "mount_from": args.mount_from or [], **_flags(args)}
    if args.chunk_size:
        body["chunk_size"] = args.chunk_size
    return _run(args, f"/v1/envs/{segment(name)}/push", body)


def cmd_pull(args: argparse.Namespace) -> Any:
    parse_reference(args.reference)
    return _run(args, "/v1/pull", {"reference": args.reference, "name": args.name, **_flags(args)})


def cmd_image(args: argparse.Namespace) -> Any:
    parse_reference(args.base)
    parse_reference(args.tag)
    from provisiond.cli.commands import _project_name

    name = _project_name(_client(args), args.target)
    return _run(args, f"/v1/envs/{segment(name)}/image", {"base": args.base, "tag": args.tag, **_flags(args)})


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true",
                   help="HTTP without TLS (localhost and 127.0.0.0/8 always use it)")
    p.add_argument("--insecure", action="store_true", help="HTTPS without verifying the certificate")


def args_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("reference", metavar="REF", help="HOST[:PORT]/REPO[:TAG] (default tag: the env_key)")
    p.add_argument("-t", "--tag", action="append", metavar="TAG", help="one more tag (repeatable)")
    p.add_argument("--mount-from", action="append", metavar="REPO",
                   help="a repository of the same registry to mount blobs from instead of uploading")
    p.add_argument("--chunk-size", type=int, metavar="BYTES",
                   help="upload blobs larger than this in chunks of this size (default 32 MiB)")
    _registry_flags(p)


def args_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", metavar="REF", help="HOST[:PORT]/REPO[:TAG|@DIGEST]")
    p.add_argument("-n", "--name", help="env name (default: the name it was pushed under)")
    _registry_flags(p)


def args_image(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--base", required=True, metavar="REF", help="the base image (it needs /bin/sh)")
    p.add_argument("--tag", required=True, metavar="REF", help="where to push the image: HOST[:PORT]/REPO:TAG")
    _registry_flags(p)


def render_push(result: dict[str, Any]) -> str:
    return (f"{result['reference']}\n  tags: {', '.join(result['tags'])}\n  {result['blobs']} blobs: "
            f"{result['transferred']} uploaded, {result['mounted']} mounted, {result['skipped']} already there "
            f"({result['bytes'] / 1048576:.1f} MiB sent)")


def render_pull(result: dict[str, Any]) -> str:
    return (f"{result['name']}: {result['prefix']}\n  env {result['env_key']} from {result['reference']}\n  "
            f"{result['blobs']} packages: {result['transferred']} downloaded, {result['skipped']} already cached")


def render_image(result: dict[str, Any]) -> str:
    base = result["base_layers"]
    return (f"{result['reference']}@{result['digest']}\n  entrypoint: {' '.join(result['entrypoint'])}\n  "
            f"{result['layers']} layers (base: {base['skipped']} present, {base['mounted']} mounted, "
            f"{base['copied']} copied)")
