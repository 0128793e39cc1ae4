"""``provisionctl audit``: known vulnerabilities in the live envs (GET /v1/audit; daemon/audit.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from provisiond.cli.client import Client

FAIL_ON = ("any", "low", "medium", "high", "critical")


def args_audit(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("target", metavar="NAME|PATH", nargs="?", help="one env, or a project by its path")
    which.add_argument("--all", action="store_true", help="every live env (the default)")
    p.add_argument("--db", metavar="PATH", help="an OSV database (directory or zip) instead of the audit_db setting")
    p.add_argument("--package", metavar="NAME", help="only findings of this package (conda or PyPI name)")
    p.add_argument("--fail-on", choices=FAIL_ON, metavar="SEVERITY",
                   help="exit 1 when a finding is at least this severe: low, medium, high, critical, or any "
                        "(any also counts advisories of unknown severity)")


def cmd_audit(args: argparse.Namespace) -> Any:
    query: dict[str, str] = {}
    if args.target:
        target = args.target
        if "/" in target or target in (".", "..") or (os.path.exists(target) and not target.isidentifier()):
            target = str(Path(target).resolve())
        query["env"] = target
    if args.db:
        query["db"] = str(Path(args.db).expanduser().resolve())
    if args.package:
        query["package"] = args.package
    result: dict[str, Any] = Client(args.settings.paths.socket).get("/v1/audit", **query)
    if args.fail_on:
        from provisiond.domain.osv import reaches

        result["fail_on"] = args.fail_on
        result["failed"] = any(reaches(f["severity"], args.fail_on) for f in result["findings"])
    return result


def exit_audit(result: dict[str, Any]) -> int:
    """1 when a finding reached --fail-on (the table or JSON is printed either way)."""
    return 1 if result.get("failed") else 0


def render_audit(result: dict[str, Any]) -> str:
    db, findings = result["db"], result["findings"]
    lines = []
    if findings:
        header = ["ENV", "PROJECT", "PACKAGE", "VERSION", "ADVISORY", "SEVERITY", "FIXED"]
        rows = [[f["env"], _home(f["project"]) if f["project"] else "-",
                 f["package"] + (" (pip)" if f["source"] == "pip" else ""), f["version"],
                 f["advisory"] + (f" ({_cve(f['aliases'])})" if _cve(f["aliases"]) else ""),
                 f["severity"] + (f" {f['score']:.1f}" if f.get("score") is not None else ""),
                 f["fixed"] or "no fix"] for f in findings]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        envs = len({f["env"] for f in findings})
        lines.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''} in {envs} of {result['envs']} envs")
    else:
        lines.append(f"no known vulnerabilities in {result['envs']} envs")
    lines.append(f"database: {db['path']} ({db['advisories']} advisories, {db['withdrawn']} withdrawn skipped"
                 + (f", {db['invalid']} unreadable records" if db["invalid"] else "") + ")")
    if result.get("failed"):
        lines.append(f"failing: findings at or above --fail-on {result['fail_on']}")
    return "\n".join(lines)


def _cve(aliases: list[str]) -> str:
    return next((a for a in aliases if a.startswith("CVE-")), "")


def _home(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path
