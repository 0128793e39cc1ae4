"""Progress for provisionctl: follow a build's events while a blocking request runs.

On a terminal: one line redrawn in place (phase, bar, counts). Otherwise: one plain line per
phase, so logs stay readable. Quiet when the request finishes at once (a ready env).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from provisiond.cli.client import Client, segment

QUIET_FOR = 0.3  # seconds: a request that finishes sooner prints no progress at all
WIDTH = 24


def with_progress(client: Client, name: str | None, request: Callable[[], Any], *, tty: bool,
                  out: TextIO = sys.stderr, quiet_for: float = QUIET_FOR) -> Any:
    """Run ``request`` (a blocking warm or create) and show the build of ``name`` meanwhile."""
    before = _build_id(client, name)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = request()
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(quiet_for)
    if worker.is_alive() and name is not None:
        render = _Bar(out, name) if tty else _Lines(out, name)
        build_id = _await_build(client, name, before, worker)
        if build_id is not None:
            try:
                for event in _events(client, build_id):
                    render(event)
            except Exception:
                pass
        render.close()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _build_id(client: Client, name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return client.get(f"/v1/envs/{segment(name)}").get("build_id")
    except Exception:
        return None


def _await_build(client: Client, name: str, before: int | None, worker: threading.Thread) -> int | None:
    """The id of the build this request started (or joined), once it has one; None if it needs none."""
    while True:
        finished = not worker.is_alive()
        current = _build_id(client, name)
        if current is not None and current != before:
            return current  # events are kept: a build that already ended still replays in full
        if finished:
            return None
        time.sleep(0.05)


def _events(client: Client, build_id: int) -> Any:
    for line in client.stream(f"/v1/builds/{build_id}/events"):
        if line.startswith("data: "):
            yield json.loads(line[len("data: "):])


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f}"


class _Lines:
    """Plain lines, one per phase."""

    def __init__(self, out: TextIO, name: str) -> None:
        self.out, self.name, self.phase = out, name, ""

    def __call__(self, event: dict[str, Any]) -> None:
        phase = event["phase"]
        if phase == self.phase:
            return
        self.phase = phase
        text = {"solved": f"{event.get('packages', 0)} packages resolved",
                "download": f"fetching {event.get('packages', 0)} packages",
                "link": f"linking {event.get('total', 0)} packages",
                "pip": f"installing {event.get('packages', 0)} pip packages",
                "done": f"ready: {event.get('prefix', '')}",
                "failed": f"failed: {event.get('error', '')}",
                "cancelled": f"cancelled: {event.get('error', '')}"}.get(phase, phase)
        print(f"{self.name}: {text}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class _Bar:
    """One line redrawn in place: ``name  link [#######.....]  40/99``."""

    def __init__(self, out: TextIO, name: str) -> None:
        self.out, self.name, self.drawn = out, name, False

    def __call__(self, event: dict[str, Any]) -> None:
        phase = event["phase"]
        done, total, extra = 0, 0, ""
        if phase == "download":
            done, total = event.get("bytes", 0), event.get("total", 0)
            extra = f" {_mib(done)}/{_mib(total)} MiB, {event.get('done', 0)}/{event.get('packages', 0)} packages"
        elif phase == "link":
            done, total = event.get("done", 0), event.get("total", 0)
            extra = f" {done}/{total}"
        filled = int(WIDTH * done / total) if total else (WIDTH if phase in ("done", "publish") else 0)
        bar = "#" * filled + "." * (WIDTH - filled)
        self.out.write(f"\r\033[K{self.name}  {phase:<10} [{bar}]{extra}")
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.out.write("\r\033[K")
            self.out.flush()
