"""provisionctl lock and update: conda-lock.yml for a project, solved by the daemon (docs/lockfiles.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from provisiond.cli.client import segment
from provisiond.cli.commands import _client, _project_name, _shows_progress


def _lock_target(target: str) -> str:
    """A path becomes absolute (the daemon has another working directory); a name stays a name."""
    if "/" in target or target in (".", "..") or os.path.exists(target):
        return str(Path(target).resolve())
    return target


def cmd_lock(args: argparse.Namespace) -> Any:
    from provisiond.domain.projectlock import StaleLockError

    body: dict[str, Any] = {"path": _lock_target(args.target), "platforms": args.platform or [],
                            "check": args.check}
    if args.file:
        body["output"] = str(Path(args.file).resolve())
    answer = _client(args).post("/v1/lock", body)
    if args.check and not answer.get("current"):
        missing = "does not exist" if not answer.get("exists") else \
            f"is stale for {', '.join(answer.get('stale') or [])}"
        raise StaleLockError(f"{answer['file']} {missing}: {answer['source']} changed since it was locked",
                             hint="run: provisionctl lock " + " ".join(f"--platform {p}" for p in answer["platforms"]))
    return answer


def render_lock(answer: dict[str, Any]) -> str:
    if "current" in answer:
        return f"{answer['file']}: current for {', '.join(answer['platforms'])}"
    counts = ", ".join(f"{p}: {n} packages" for p, n in answer["packages"].items())
    said = "wrote" if answer["written"] else "unchanged"
    return f"{said} {answer['file']} ({counts})"


def args_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="PATH|NAME", nargs="?", default=".",
                   help="an environment file, a project directory or an env name (default: .)")
    p.add_argument("-p", "--platform", action="append", metavar="P",
                   help="lock for P (repeat for several); default: the file's platforms:, else the "
                        "existing lock's, else this machine's")
    p.add_argument("-f", "--file", metavar="OUT", help="the lock to write (default: conda-lock.yml beside the file)")
    p.add_argument("--check", action="store_true",
                   help="solve nothing: exit 1 when the lock is missing or stale for the file (for CI)")


def cmd_update(args: argparse.Namespace) -> Any:
    client, tty = _client(args), _shows_progress(args)
    name = _project_name(client, args.target)
    path, body = f"/v1/envs/{segment(name)}/update", {"packages": args.packages, "progress": bool(tty)}
    if tty is None:
        return client.post(path, body)
    from provisiond.cli.commands import _progress_delay
    from provisiond.cli.progress import with_progress

    return with_progress(client, name, lambda: client.post(path, body), tty=tty, quiet_for=_progress_delay())


def render_update(view: dict[str, Any]) -> str:
    from provisiond.cli.render import render

    return render("warm", view)


def args_update(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("packages", nargs="*", metavar="PKG",
                   help="packages to update; the rest stay as locked (none: re-lock everything)")
