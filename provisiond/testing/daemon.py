"""A real provisiond in a subprocess, on a private store, state dir and socket.

Used by the tests, the benchmarks and anything else that needs a throwaway daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from provisiond.cli.client import Client
from provisiond.domain.errors import DaemonUnavailableError


class DaemonProcess:
    """``start()`` returns once the daemon answers /v1/health; ``stop()`` never leaves it behind."""

    def __init__(self, home: Path, socket: Path, *, state: Path | None = None,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (), log: Path | None = None) -> None:
        self.home, self.socket = home, socket
        self.state = state or home.parent / "user-state"
        # Its own Jupyter data dir: kernelspecs of a test store never land in the user's.
        self.jupyter = home.parent / "jupyter"
        self.base_env = dict(os.environ if env is None else env)
        self.args = list(args)
        self.fixed_log = log
        self.log: Path | None = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> Client:
        return Client(self.socket, timeout=600)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "provisiond", "--home", str(self.home), "--socket", str(self.socket),
                *self.args]

    def environ(self) -> dict[str, str]:
        """No user config file, no .condarc; per-user state, conda's environments.txt and the Jupyter
        data dir in our own dirs."""
        return {"PROVISIOND_CONDA_CONFIG": "false",
                "PROVISIOND_ENVIRONMENTS_TXT": str(self.home.parent / "conda" / "environments.txt"),
                **self.base_env, "PROVISIOND_CONFIG": str(self.home.parent / "none.toml"),
                "PROVISIOND_STATE": str(self.state), "JUPYTER_DATA_DIR": str(self.jupyter)}

    def start(self, timeout: float = 60) -> DaemonProcess:
        self.log = self.fixed_log or self.home.parent / f"daemon-{time.monotonic_ns()}.log"
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Send ``sig`` and wait; a daemon that does not stop in ``timeout`` is killed (exit < 0)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
