"""Shared fixtures: a real local channel (built once per session) and real daemons on real sockets."""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisiond.cli import commands as cli
from provisiond.testing.channel import build_channel, demo_packages
from provisiond.testing.daemon import DaemonProcess
from provisiond.testing.micromamba import MISSING, find_test_micromamba

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# ../shared sits beside the checkout on our machines and in CI, not in a user's clone.
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (a clone without ../shared)")
MICROMAMBA = find_test_micromamba()
# The engines every e2e test that takes the `daemon` fixture runs under (tests/README.md):
# "micromamba" is its default (micromamba solves, rattler's installer links), "micromamba+micromamba"
# sets micromamba_install = micromamba (micromamba links too: its @EXPLICIT install).
_NEEDS_MICROMAMBA = pytest.mark.skipif(MICROMAMBA is None, reason=MISSING)
ENGINES = [pytest.param("rattler"), pytest.param("micromamba", marks=_NEEDS_MICROMAMBA),
           pytest.param("micromamba+micromamba", marks=_NEEDS_MICROMAMBA)]


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


class Daemon(DaemonProcess):
    """A real provisiond process on a real Unix socket, with debug logs and a quick watcher.

    ``engine`` is always pinned with ``--engine`` (``engine = auto`` would follow whatever is on
    PATH); ``None`` leaves it to the config file, for tests of that file. ``micromamba+LINKER``
    also pins ``micromamba_install`` (``engine`` is then ``micromamba``, ``linker`` LINKER).
    """

    def __init__(self, home: Path, socket: Path, engine: str | None = "rattler") -> None:
        engine, _, linker = (engine or "").partition("+")
        if engine == "micromamba" and MICROMAMBA is None:
            pytest.skip(MISSING)
        self.engine = engine or None
        self.linker = linker or None
        super().__init__(home, socket, args=["-vv", *(["--engine", engine] if engine else [])])

    def environ(self) -> dict[str, str]:
        env = {**super().environ(), "PROVISIOND_WATCH_DEBOUNCE_MS": "400", "PROVISIOND_WATCH_STEP_MS": "30"}
        if self.engine == "micromamba":
            env["PROVISIOND_MICROMAMBA_PATH"] = str(MICROMAMBA)
        if self.linker:
            env["PROVISIOND_MICROMAMBA_INSTALL"] = self.linker
        return env

    def start(self, timeout: float = 30) -> Daemon:
        super().start(timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        code = super().stop(sig, timeout)
        assert code is not None, "the daemon was never started"
        return code

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

    def raw(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        """One request with http.client, bypassing our client: (status, decoded JSON answer).

        ``body`` bytes are sent as they are (malformed JSON on purpose); anything else as JSON.
        """
        import http.client
        import json
        import socket as socketlib

        conn = http.client.HTTPConnection("provisiond")
        conn.sock = socketlib.socket(socketlib.AF_UNIX)
        conn.sock.connect(str(self.socket))
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def ctl(self, *args: str) -> tuple[int, str, str]:
        """Run provisionctl in-process against this daemon: (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--socket", str(self.socket), *args])
        return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def serve_directory(directory: Path, before_get: Callable[[str], None] | None = None, *,
                    token: str | None = None, basic: tuple[str, str] | None = None) -> Iterator[str]:
    """``directory`` over real HTTP on the loopback interface; yields the base URL.

    ``before_get(path)`` runs before each GET is answered (e.g. to hold downloads back).
    ``token``: every path must start with ``/t/<token>/`` (conda's convention), else 403;
    ``basic``: every request must carry that user and password (HTTP basic auth), else 401.
    The base URL yielded holds neither: the client must add them.
    """
    import base64
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def authorized(self) -> bool:
            if basic is not None:
                expected = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_error(401)
                    return False
            if token is not None:
                if not self.path.startswith(f"/t/{token}/"):
                    self.send_error(403)
                    return False
                self.path = self.path[len(f"/t/{token}"):]
            return True

        def do_GET(self) -> None:
            if not self.authorized():
                return
            if before_get is not None:
                before_get(self.path)
            super().do_GET()

        def do_HEAD(self) -> None:
            if self.authorized():
                super().do_HEAD()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp: AF_UNIX socket paths max out at 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# e2e modules whose outcome depends on the engine (solve, build, cache, pip, bundles, credentials,
# progress): their `daemon` tests run under both engines. The others (API limits, trust, watcher,
# shells, signals...) run under rattler, unless PROVISIOND_TEST_ENGINES=both (tests/README.md).
BOTH_ENGINES = frozenset({"test_core", "test_workflows", "test_pip", "test_gc", "test_bundle", "test_private",
                          "test_progress", "test_channels"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine(name): run this test's `daemon` under that engine only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``engine_name`` (what the ``daemon`` fixture pins): both engines in BOTH_ENGINES modules, or
    everywhere with PROVISIOND_TEST_ENGINES=both; ``@pytest.mark.engine("x")`` keeps one."""
    if "engine_name" not in metafunc.fixturenames:
        return
    import os

    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    params = ENGINES if module in BOTH_ENGINES or os.environ.get("PROVISIOND_TEST_ENGINES") == "both" \
        else ENGINES[:1]
    if (marker := metafunc.definition.get_closest_marker("engine")) is not None:
        params = [p for p in ENGINES if p.values[0] == marker.args[0]]
    metafunc.parametrize("engine_name", params)


@pytest.fixture
def daemon(tmp_path: Path, short_dir: Path, engine_name: str) -> Iterator[Daemon]:
    d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock", engine=engine_name).start()
    yield d
    code = d.stop()
    assert code == 0, f"provisiond exited {code}:\n{d.log.read_text() if d.log else ''}"
