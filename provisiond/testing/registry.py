"""A real OCI registry for tests and benchmarks: Debian's ``docker-registry`` (CNCF distribution).

Started on a loopback port with its storage in a temp dir and its access log in a file, so a test
can count the requests a push made (``requests()``). ``htpasswd=(user, password)`` turns on basic
auth (the file is written with apache2-utils' ``htpasswd -B``).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

EXE = "docker-registry"
_ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3})')


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    status: int


def missing() -> str | None:
    """Why a registry cannot start here (None: it can)."""
    if shutil.which(EXE) is None:
        return f"{EXE} is not installed (Debian: apt-get install docker-registry; scripts/test does it as root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1:PORT; ``address`` is what references start with."""

    def __init__(self, root: Path, *, htpasswd: tuple[str, str] | None = None) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        self.htpasswd = htpasswd
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        auth = ""
        if self.htpasswd is not None:
            if shutil.which("htpasswd") is None:
                raise RuntimeError("htpasswd (apache2-utils) is needed for a registry with a password")
            line = subprocess.run(["htpasswd", "-Bbn", *self.htpasswd], check=True, capture_output=True).stdout
            (self.root / "htpasswd").write_bytes(line)
            auth = f"auth:\n  htpasswd:\n    realm: provisiond-tests\n    path: {self.root / 'htpasswd'}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n{auth}")
        return config

    def start(self, timeout: float = 30) -> LocalRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([EXE, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2).close()
                return self
            except urllib.error.HTTPError as exc:  # 401 with auth on: it answers
                exc.close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{EXE} did not start:\n{self.log.read_text(errors='replace')[-2000:]}"
                                       ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def requests(self) -> list[Request]:
        """Every request the registry answered so far, from its access log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [Request(m[1], m[2], int(m[3])) for m in _ACCESS.finditer(text)]

    def blob_files(self) -> list[Path]:
        """The blobs it stores (data/docker/registry/v2/blobs/sha256/xx/<hex>/data)."""
        return sorted((self.root / "data").glob("docker/registry/v2/blobs/sha256/*/*/data"))

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "data" / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
