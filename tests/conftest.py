"""Shared fixtures: a real local channel (built once per session) and real daemons on real sockets."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisiond import cli
from provisiond.client import Client
from provisiond.errors import DaemonUnavailableError
from provisiond.testing.channel import build_channel, demo_packages

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real conda channel: hello 1.0/2.0, libgreet, greet-data (noarch), tool-a."""
    return build_channel(tmp_path_factory.mktemp("channel"), demo_packages())


def write_project(directory: Path, channel: Path, deps: list[str], name: str | None = None,
                  extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}"] if name else []
    lines += ["channels:", f"  - {channel.as_uri()}", "dependencies:"]
    lines += [f"  - {d}" for d in deps]
    (directory / "environment.yml").write_text("\n".join(lines) + "\n" + extra)
    return directory


@dataclass
class Daemon:
    """A real provisiond process on a real Unix socket."""

    home: Path
    socket: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def client(self) -> Client:
        return Client(self.socket, timeout=120)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "provisiond", "--home", str(self.home), "--socket", str(self.socket), "-vv"]

    @property
    def state(self) -> Path:
        return self.home.parent / "user-state"

    def environ(self) -> dict[str, str]:
        """The daemon's environment: no user config file, per-user state in the test's tmp dir."""
        return {**os.environ, "PROVISIOND_CONFIG": str(self.home.parent / "none.toml"),
                "PROVISIOND_STATE": str(self.state), "PROVISIOND_WATCH_DEBOUNCE_MS": "400",
                "PROVISIOND_WATCH_STEP_MS": "30"}

    def start(self, timeout: float = 30) -> Daemon:
        self.log = self.home.parent / f"daemon-{time.monotonic_ns()}.log"
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=log, env=self.environ())
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.get("/v1/health")
                return self
            except DaemonUnavailableError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"provisiond did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave a daemon behind a failed test
            self.proc.wait()
            raise

    def wait_for(self, name: str, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        """Poll the env until ``predicate(view)`` holds (background work has no event to await)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.client.get(f"/v1/envs/{name}")
            if predicate(view):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never reached the expected state; last: {view}")
            time.sleep(0.05)

    def ctl(self, *args: str) -> tuple[int, str, str]:
        """Run provisionctl in-process against this daemon: (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--socket", str(self.socket), *args])
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp: AF_UNIX socket paths max out at 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(tmp_path: Path, short_dir: Path) -> Iterator[Daemon]:
    d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock").start()
    yield d
    code = d.stop()
    assert code == 0, f"provisiond exited {code}:\n{d.log.read_text() if d.log else ''}"
