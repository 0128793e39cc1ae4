"""run_process(): the one place provisiond spawns a child, streams its output and kills it.

The child gets ``/dev/null`` as stdin (micromamba 2.8.1 still prompts under ``--json`` without
``-y``) and leads its own process group (``start_new_session``), so one ``killpg`` reaches
everything it started. Cancelling the awaiting task does not stop a child by itself: that is
what the ``except BaseException`` below is for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisiond.domain.errors import EngineError, ProvisionError
from provisiond.engines.base import OnLine

log = logging.getLogger(__name__)

TAIL_LINES = 20
GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_CHUNK = 64 * 1024
_MAX_LINE = 64 * 1024  # progress output without newlines is cut into pieces of this size


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How a child ended: exit code (negative: killed by that signal), last output lines, stdout if captured."""

    returncode: int
    output_tail: tuple[str, ...]
    stdout: str = ""

    def describe_exit(self) -> str:
        """``exit 1`` or ``killed by SIGSEGV``, for error messages."""
        if self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        return f"exit {self.returncode}"


async def run_process(
    argv: Sequence[str],
    *,
    on_line: OnLine,
    timeout: float,
    env: Mapping[str, str],
    cwd: Path | None = None,
    step: str | None = None,
    capture_stdout: bool = False,
    grace: float = GRACE,
    on_timeout: Callable[[str], ProvisionError] | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion, passing each line of its output to ``on_line``.

    By default stdout and stderr share one pipe (no deadlock between two pipes, and the
    order of lines is kept). With ``capture_stdout`` stdout is collected whole and returned
    (micromamba writes its ``--json`` document there) while stderr (its log) is streamed.
    A non-zero exit is not an error here: the caller reads ``returncode``.

    Raises:
        EngineError: the child could not be started, or ran longer than ``timeout`` seconds
            (``step`` names it in the message). On that, on cancellation and on any other
            exception the child's whole process group gets SIGTERM, then SIGKILL after
            ``grace`` seconds, and is reaped before the exception propagates. ``on_timeout(message)``
            gives a more precise error for the timeout (e.g. ChannelTimeoutError).
    """
    step = step or " ".join(os.path.basename(a) for a in argv[:2])
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def emit(line: str) -> None:
        tail.append(line)
        on_line(line)

    log.debug("run %s: %s", step, " ".join(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise EngineError(f"{step}: cannot start {argv[0]}: {exc.strerror or exc}") from None
    assert proc.stdout is not None
    # Owned here: finished, or cancelled and awaited, before this function returns.
    reader = asyncio.create_task(proc.stdout.read()) if capture_stdout else None
    try:
        async with asyncio.timeout(timeout):
            streamed = proc.stderr if capture_stdout else proc.stdout
            assert streamed is not None
            await _stream_lines(streamed, emit)
            stdout = await reader if reader is not None else b""
            returncode = await proc.wait()
    except TimeoutError:
        await _stop(proc, grace)
        message = f"{step} timed out after {timeout:g}s and was stopped"
        if on_timeout is not None:
            raise on_timeout(message) from None
        raise EngineError(message, hint="a slow network or a huge environment may need more time; see the build log",
                          ) from None
    except BaseException:
        await _stop(proc, grace)
        raise
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return ProcessResult(returncode, tuple(tail), stdout.decode("utf-8", errors="replace"))


async def _stream_lines(reader: asyncio.StreamReader, emit: OnLine) -> None:
    """Split a byte stream into lines; a ``\\r`` redraw keeps only its last state."""
    pending = b""
    while chunk := await reader.read(_CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            emit(_text(line))
        if len(pending) > _MAX_LINE:
            emit(_text(pending))
            pending = b""
    if pending:
        emit(_text(pending))


def _text(line: bytes) -> str:
    return line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", errors="replace")


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds, reap the child."""
    try:
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                log.warning("pid %d ignored SIGTERM for %gs: sending SIGKILL", proc.pid, grace)
        # Always: grandchildren may outlive the group leader.
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled again while waiting: never leave it running
            _signal_group(proc.pid, signal.SIGKILL)
        # Process has no public close(); after a kill a pipe may be left unread, which keeps
        # the transport open and warns (ResourceWarning) when it is collected.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already
