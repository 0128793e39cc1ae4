"""Progress for provisionctl: follow a build's events while a blocking request runs.

On a terminal: one line redrawn in place, never wider than the terminal (a line that wraps
cannot be redrawn, and each redraw would leave a new line): phase, bar, counts, and for downloads
bytes, rate and time left. Otherwise (a pipe, a log, ``TERM=dumb``): one plain line per phase.
Phases only move forward (downloads and links overlap; the line does not flip back), colour only
without ``NO_COLOR``, and nothing at all when the request finishes at once (a ready env).

Hand-written rather than rich or tqdm: the events are the daemon's (phases, bytes, counts), so a
library would only draw the bar, and a library must be taught the phases anyway. Imported cold in
a fresh interpreter on the (busy) 2-core machine, interleaved 5 times: ``rich.progress`` 174-262 ms,
``tqdm`` 230-272 ms, this module with everything it imports 20-38 ms (most of which a command has
already loaded), and that only after QUIET_FOR.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from provisiond.cli import jsontext
from provisiond.cli.client import Client, segment
from provisiond.domain.errors import ProvisionError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TextIO

QUIET_FOR = 0.3  # seconds: a request that finishes sooner prints no progress at all
ORDER = ("solved", "download", "link", "pip", "publish", "activation", "done")
TERMINAL = ("done", "failed", "cancelled")


class BuildContinues(ProvisionError, code="interrupted", http_status=499, exit_code=130):
    """Ctrl-C in provisionctl: the daemon goes on with the build (exit 130, as for SIGINT)."""


def interrupted(name: str | None) -> BuildContinues:
    """What Ctrl-C during ``warm``/``create`` says: the build goes on, how to follow or stop it."""
    if name is None:
        return BuildContinues("interrupted; provisiond goes on with the build",
                              hint="see it with: provisionctl status")
    return BuildContinues(f"interrupted; provisiond goes on building {name} in the background",
                          hint=f"follow it: provisionctl warm {name} (or: provisionctl log {name}); "
                               f"cancel it: provisionctl cancel {name}")


def with_progress(client: Client, name: str | None, request: Callable[[], Any], *, tty: bool,
                  out: TextIO = sys.stderr, quiet_for: float = QUIET_FOR) -> Any:
    """Run ``request`` (a blocking warm or create) and show the build of ``name`` meanwhile.

    Ctrl-C stops only the waiting: it raises ``BuildContinues``, the daemon goes on."""
    before = _build_id(client, name)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = request()
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc

    render: _Bar | _Lines | None = None
    worker = threading.Thread(target=call, daemon=True)
    try:
        worker.start()
        worker.join(quiet_for)
        if worker.is_alive() and name is not None:
            render = _Bar(out, name) if tty and _is_terminal(out) else _Lines(out, name)
            build_id = _await_build(client, name, before, worker)
            if build_id is not None:
                try:
                    for event in _events(client, build_id):
                        render(event)
                except ProvisionError:
                    pass  # the build's events are gone (an old build): the answer still comes
        while worker.is_alive():
            worker.join(0.2)  # short waits: Ctrl-C is seen at once
    except KeyboardInterrupt:
        if render is not None:
            render.close()
        raise interrupted(name) from None
    if render is not None:
        render.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _is_terminal(out: TextIO) -> bool:
    return os.environ.get("TERM") != "dumb" and out.isatty()


def color_allowed(out: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set to anything (https://no-color.org)."""
    return "NO_COLOR" not in os.environ and _is_terminal(out)


def _build_id(client: Client, name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return client.get(f"/v1/envs/{segment(name)}").get("build_id")
    except ProvisionError:
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


def _events(client: Client, build_id: int) -> Iterator[dict[str, Any]]:
    for line in client.stream(f"/v1/builds/{build_id}/events"):
        if line.startswith("data: "):
            yield jsontext.loads(line[len("data: "):])


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class _State:
    """What the events said so far; the phase only moves forward."""

    def __init__(self) -> None:
        self.phase = ""
        self.packages = 0
        self.bytes = self.total_bytes = 0
        self.fetched = self.to_fetch = 0
        self.linked = self.to_link = 0
        self.error = self.prefix = ""
        self.samples: list[tuple[float, int]] = []  # (time, bytes) of recent download events

    def update(self, event: dict[str, Any]) -> bool:
        """Take ``event``; True when it moved the phase forward."""
        phase = event.get("phase", "")
        if phase == "solved":
            self.packages = int(event.get("packages", 0))
        elif phase == "download":
            self.bytes, self.total_bytes = int(event.get("bytes", 0)), int(event.get("total", 0))
            self.fetched, self.to_fetch = int(event.get("done", 0)), int(event.get("packages", 0))
            now = float(event.get("time") or time.time())
            self.samples = [s for s in self.samples if now - s[0] <= 5.0][-20:] + [(now, self.bytes)]
        elif phase == "link":
            self.linked, self.to_link = int(event.get("done", 0)), int(event.get("total", 0))
        elif phase in ("failed", "cancelled"):
            self.error = str(event.get("error", ""))
        elif phase == "done":
            self.prefix = str(event.get("prefix", ""))
        if phase in TERMINAL or (phase in ORDER and (self.phase not in ORDER
                                                     or ORDER.index(phase) > ORDER.index(self.phase))):
            self.phase = phase
            return True
        return False

    def rate(self) -> float | None:
        """Bytes a second over the last few seconds of download events."""
        if len(self.samples) < 2:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 and b1 > b0 else None

    def downloading(self) -> bool:
        return self.to_fetch > 0 and self.fetched < self.to_fetch

    def download_text(self, *, short: bool = False) -> str:
        text = f"{_size(self.bytes)}/{_size(self.total_bytes)}"
        rate = self.rate()
        if rate:
            text += f" {_size(rate)}/s"
            if self.total_bytes > self.bytes:
                text += f" {_clock((self.total_bytes - self.bytes) / rate)}" if short else \
                    f" ETA {_clock((self.total_bytes - self.bytes) / rate)}"
        return text


class _Lines:
    """Plain lines, one per phase, in order."""

    def __init__(self, out: TextIO, name: str) -> None:
        self.out, self.name, self.state = out, name, _State()

    def __call__(self, event: dict[str, Any]) -> None:
        s = self.state
        if not s.update(event):
            return
        text = {"solved": f"{s.packages} packages resolved",
                "download": f"fetching {s.to_fetch} packages ({_size(s.total_bytes)})",
                "link": f"linking {s.to_link} packages",
                "pip": f"installing {event.get('packages', 0)} pip packages",
                "done": f"ready: {s.prefix}",
                "failed": f"failed: {s.error}",
                "cancelled": f"cancelled: {s.error}"}.get(s.phase, s.phase)
        print(f"{self.name}: {text}", file=self.out, flush=True)

    def close(self) -> None:
        pass


class _Bar:
    """One line redrawn in place, cut to the terminal's width (read at each redraw: it may change):
    ``name  link  [#######.....]  40/99  12.3/45.6 MiB 3.2 MiB/s ETA 0:10``."""

    def __init__(self, out: TextIO, name: str) -> None:
        self.out, self.name, self.state, self.drawn = out, name, _State(), False
        self.bold, self.reset = ("\033[1m", "\033[0m") if color_allowed(out) else ("", "")

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.out.fileno()).columns or 80  # 0: a pty nobody sized
        except (OSError, ValueError, AttributeError):
            return 80

    def line(self, columns: int) -> tuple[str, str, str]:
        """(name, phase, the rest): together at most ``columns - 1`` wide."""
        s = self.state
        done, total = {"download": (s.bytes, s.total_bytes), "link": (s.linked, s.to_link)}.get(s.phase, (0, 0))
        counts = f"{s.linked}/{s.to_link}" if s.phase == "link" else \
            f"{s.fetched}/{s.to_fetch}" if s.phase == "download" else ""
        extra = s.download_text(short=columns < 60) if s.downloading() or s.phase == "download" else ""
        width = columns - 1  # the last column would wrap on some terminals
        name = self.name if len(self.name) <= max(8, width // 4) else self.name[:max(8, width // 4) - 1] + "~"
        phase = s.phase or "waiting"
        fixed = len(name) + 1 + len(phase) + (1 + len(counts) if counts else 0) + (1 + len(extra) if extra else 0)
        bar_width = min(30, width - fixed - 3)  # " [" + "]"
        if bar_width < 6:
            bar = ""
        else:
            filled = int(bar_width * done / total) if total else (bar_width if phase in ("done", "publish",
                                                                                         "activation") else 0)
            bar = f" [{'#' * filled}{'.' * (bar_width - filled)}]"
        rest = f"{bar}{' ' + counts if counts else ''}{' ' + extra if extra else ''}"
        head = f"{name} "
        if len(head) + len(phase) + len(rest) > width:
            rest = rest[:max(0, width - len(head) - len(phase))]
        if len(head) + len(phase) > width:
            head, phase = head[:width], phase[:max(0, width - len(head))]
        return head, phase, rest

    def __call__(self, event: dict[str, Any]) -> None:
        self.state.update(event)
        head, phase, tail = self.line(self._columns())
        self.out.write(f"\r\033[K{head}{self.bold}{phase}{self.reset}{tail}")
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.out.write("\r\033[K")
            self.out.flush()
            self.drawn = False
