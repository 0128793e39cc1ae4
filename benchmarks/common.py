"""What the benchmark scripts share: the repo on sys.path, the child processes' environment, the
console script, the work dir and its filesystem, medians, the command line, and a daemon to measure.

The scripts import it as ``common`` (their own directory is on sys.path); it puts the repo there too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provisiond.testing.daemon import DaemonProcess  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
# Measure what users get: Python caches bytecode. (Some sandboxes set PYTHONDONTWRITEBYTECODE,
# which makes every provisionctl start recompile its modules.) compile_package() compiles them first.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
CONSOLE = Path(sys.executable).parent / "provisionctl"
CTL = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "provisiond.cli"]


def compile_package() -> None:
    """Byte-compile provisiond, as an installed package has it (see ENV)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "provisiond")], check=True, env=ENV)


def med(samples: list[float], digits: int = 1) -> float:
    return round(statistics.median(samples), digits)


def filesystem(path: Path, *, detail: bool = False) -> str:
    """The filesystem holding ``path``: the longest matching mount point in /proc/mounts.

    ``fstype (mount point)``; with ``detail``, ``fstype on mount point (device; options)``."""
    best, found = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            dev, mnt, fstype, opts = line.split()[:4]
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best, found = mnt, f"{fstype} on {mnt} ({dev}; {opts})" if detail else f"{fstype} ({mnt})"
    return found


def parse_args(doc: str, quick: str,
               more: Callable[[argparse.ArgumentParser], object] = lambda ap: None) -> argparse.Namespace:
    """--quick (help: ``quick``), the script's own options (``more``), then --tmp, --json and --keep."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    more(ap)
    ap.add_argument("--tmp", type=Path, help="where to build (default: /dev/shm if writable, else the temp dir)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    return ap.parse_args()


def progress(quiet: bool) -> Callable[[str], None]:
    """Progress lines go to stderr, none with --json."""
    return (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))


@contextlib.contextmanager
def workspace(args: argparse.Namespace, prefix: str, *, socket_dir: bool = False) -> Iterator[tuple[Path, Path]]:
    """A fresh work dir under --tmp (default /dev/shm if writable, else the temp dir) and, with
    ``socket_dir``, a short one under /tmp for the socket (AF_UNIX paths max out at 108 bytes; else the
    work dir again); provisiond byte-compiled (see ENV). All removed at the end unless --keep."""
    base = args.tmp or (Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir()))
    ws = Path(tempfile.mkdtemp(prefix=prefix, dir=base)).resolve()
    short = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")) if socket_dir else ws
    try:
        compile_package()
        yield ws, short
    finally:
        if args.keep:
            print(f"kept {ws}" + (f" (socket dir {short})" if socket_dir else ""), file=sys.stderr)
        else:
            shutil.rmtree(ws, ignore_errors=True)
            shutil.rmtree(short, ignore_errors=True)


def run(main: Callable[[], int]) -> NoReturn:
    """Run ``main``, report what it raised, then leave through os._exit (rattler can crash at exit)."""
    try:
        status = main()
    except SystemExit as exc:  # argparse's --help, or a usage error it has reported
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException as exc:  # report it, then still leave through os._exit
        import traceback

        traceback.print_exc()
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class BenchDaemon(DaemonProcess):
    """A real provisiond on a private store, state dir and socket, started with ENV (its log in ``work``)."""

    def __init__(self, work: Path, socket: Path, *, home: str = "store") -> None:
        super().__init__(work / home, socket, state=work / "state", env=ENV, log=work / "daemon.log")

    def start(self, timeout: float = 60) -> BenchDaemon:
        super().start(timeout)
        return self

    def __enter__(self) -> BenchDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()  # again if main() already did: then it only reads the exit code

    def ctl_argv(self) -> list[str]:
        """provisionctl (the console script) pointed at this daemon."""
        return [*CTL, "--home", str(self.home), "--socket", str(self.socket)]

    def ctl(self, *args: str) -> str:
        """Run provisionctl ``args`` against this daemon, in its environment; its stdout."""
        return subprocess.run([*self.ctl_argv(), *args], capture_output=True, text=True, env=self.environ(),
                              check=True).stdout
