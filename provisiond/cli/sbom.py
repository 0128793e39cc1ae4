"""``provisionctl sbom NAME|PATH``: a CycloneDX or SPDX document of an env (GET /v1/envs/NAME/sbom)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from provisiond.cli.client import Client, segment


def args_sbom(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH", help="a named env, or a project by its path")
    p.add_argument("--format", choices=("cyclonedx", "spdx"), default="cyclonedx",
                   help="CycloneDX 1.6 JSON (default) or SPDX 2.3 JSON")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def cmd_sbom(args: argparse.Namespace) -> Any:
    target = args.target
    if "/" in target or target in (".", "..") or (os.path.exists(target) and not target.isidentifier()):
        target = str(Path(target).resolve())  # a project, found by the daemon without registering it
    text = Client(args.settings.paths.socket).get(f"/v1/envs/{segment(target)}/sbom", format=args.format)
    if not isinstance(text, str):  # the client decodes JSON answers
        text = json.dumps(text, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return {"name": args.target, "format": args.format, "file": str(Path(args.output).resolve())}
    if args.json:
        return json.loads(text)
    return {"name": args.target, "format": args.format, "text": text}


def render_sbom(result: dict[str, Any]) -> str:
    if "file" in result:
        return f"wrote {result['file']} ({result['format']})"
    return str(result["text"]).rstrip("\n")
