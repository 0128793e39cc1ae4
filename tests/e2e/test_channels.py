"""Channels as the daemon meets them: one that hangs, one that gains a version (issue #10)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from provisiond.testing.channel import Pkg, build_channel, hello_pkg
from provisiond.testing.micromamba import MISSING, find_test_micromamba
from tests.conftest import Daemon
from tests.e2e.test_signals import eventually


class TunedDaemon(Daemon):
    """A daemon with extra ``PROVISIOND_*`` settings in its environment."""

    def __init__(self, home: Path, socket_path: Path, **settings: str) -> None:
        super().__init__(home, socket_path, engine=settings.pop("engine", "rattler"))
        self.settings = {f"PROVISIOND_{k.upper()}": v for k, v in settings.items()}

    def environ(self) -> dict[str, str]:
        return {**super().environ(), **self.settings}


@contextmanager
def hung_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """An HTTP "channel" on 127.0.0.1 that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hung", accepted
    finally:
        stop.set()
        thread.join(30)
        for conn in accepted:
            conn.close()
        server.close()


def env_file(path: Path, name: str, channel: str, dep: str) -> Path:
    path.write_text(f"name: {name}\nchannels:\n  - {channel}\ndependencies:\n  - {dep}\n")
    return path


def test_a_hung_channel_times_out_while_other_specs_build(tmp_path: Path, short_dir: Path, channel: Path) -> None:
    # rattler: micromamba 2.8.1 has no read timeout to set (see docs/micromamba.md).
    daemon = TunedDaemon(tmp_path / "home", short_dir / "d.sock", engine="rattler", connect_timeout="1",
                         fetch_timeout="1").start()
    try:
        with hung_server() as (url, accepted):
            answers: dict[str, tuple[int, dict]] = {}

            def warm_hung() -> None:
                answers["h"] = daemon.raw("POST", "/v1/envs", {"file": str(env_file(tmp_path / "h.yml", "h", url,
                                                                                     "hello")), "name": "h"})

            thread = threading.Thread(target=warm_hung)
            thread.start()
            try:
                eventually("the hung server has a connection", lambda: accepted)
                # Meanwhile a spec on a healthy channel builds.
                code, out, err = daemon.ctl("create", "-f", str(env_file(tmp_path / "ok.yml", "ok", channel.as_uri(),
                                                                         "tool-a")), "--json")
                assert code == 0, err
                assert json.loads(out)["status"] == "ready"
            finally:
                thread.join(120)
        status, body = answers["h"]
        assert status == 504 and body["error"]["code"] == "channel-timeout", body
        assert "127.0.0.1" in body["error"]["message"] and "did not" in body["error"]["message"]
        assert "fetch_timeout" in body["error"]["hint"] and url in body["error"]["hint"]
        assert daemon.raw("GET", "/v1/envs/h")[0] == 404  # a failed create leaves no name behind

        # The CLI: the same error, exit 75 (EX_TEMPFAIL), the hint on stderr.
        with hung_server() as (url, _accepted):
            code, _out, err = daemon.ctl("create", "-f", str(env_file(tmp_path / "h2.yml", "h2", url, "hello")))
        assert code == os.EX_TEMPFAIL, err
        assert "127.0.0.1" in err and "hint:" in err and "fetch_timeout" in err
    finally:
        assert daemon.stop() == 0


def test_a_hung_channel_blocks_no_other_spec(tmp_path: Path, short_dir: Path, channel: Path) -> None:
    # Limits far beyond the test's life: the hung warm is still waiting when the other one is done.
    daemon = TunedDaemon(tmp_path / "home", short_dir / "d.sock", connect_timeout="300",
                         fetch_timeout="300").start()
    try:
        with hung_server() as (url, accepted):
            hung: dict[str, object] = {}

            def warm_hung() -> None:
                hung["answer"] = daemon.raw("POST", "/v1/envs", {"file": str(env_file(tmp_path / "h.yml", "h", url,
                                                                                          "hello")), "name": "h"})

            thread = threading.Thread(target=warm_hung)
            thread.start()
            try:
                eventually("the hung server has a connection", lambda: accepted)
                daemon.wait_for("h", lambda v: v["status"] == "building")
                code, out, err = daemon.ctl("create", "-f", str(env_file(tmp_path / "ok.yml", "ok", channel.as_uri(),
                                                                         "tool-a")), "--json")
                assert code == 0, err
                assert json.loads(out)["status"] == "ready"
                assert thread.is_alive() and "answer" not in hung  # still waiting on the hung server
            finally:
                # Shutdown is not held up by it either: the waiting request gets a 503.
                assert daemon.stop(signal.SIGTERM) == 0
                thread.join(60)
        status, body = hung["answer"]  # type: ignore[misc]
        assert status == 503 and body["error"]["code"] == "shutting-down"
    finally:
        daemon.stop()


MICROMAMBA = find_test_micromamba()


@pytest.fixture(params=["rattler", "micromamba"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The engine's settings; micromamba runs when one is on PATH (its HOME is a temp dir)."""
    if request.param == "micromamba":
        if MICROMAMBA is None:
            pytest.skip(MISSING)
        (tmp_path / "user-home").mkdir()
        return {"engine": "micromamba", "micromamba_path": str(MICROMAMBA)}
    return {"engine": "rattler"}


def hello_says(prefix: str) -> str:
    return subprocess.run([Path(prefix) / "bin" / "hello"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.split(" from ")[0]


def growing_channel(root: Path) -> Path:
    """hello 1.0 only, for now."""
    return build_channel(root, [Pkg("libgreet", "1.0"), hello_pkg("hello", "1.0", depends=("libgreet",))])


def gain_hello_2(root: Path) -> None:
    build_channel(root, [hello_pkg("hello", "2.0", depends=("libgreet",))])  # re-indexes the whole channel


def tuned(tmp_path: Path, short_dir: Path, engine: dict[str, str], **settings: str) -> TunedDaemon:
    daemon = TunedDaemon(tmp_path / "home", short_dir / "d.sock", **engine, **settings)
    if engine["engine"] == "micromamba":  # `create` registers every prefix in ~/.conda/environments.txt
        daemon.base_env["HOME"] = str(tmp_path / "user-home")
    return daemon.start()


def says(daemon: TunedDaemon, *args: str) -> str:
    """What `hello` of the env that ``provisionctl ARGS --json`` made ready says."""
    code, out, err = daemon.ctl(*args, "--json")
    assert code == 0, err
    return hello_says(json.loads(out)["prefix"])


def test_solve_ttl_0_sees_a_new_version_without_update(tmp_path: Path, short_dir: Path,
                                                       engine: dict[str, str]) -> None:
    channel = growing_channel(tmp_path / "channel")
    daemon = tuned(tmp_path, short_dir, engine, solve_ttl="0")
    try:
        spec = env_file(tmp_path / "e.yml", "e", channel.as_uri(), "hello")
        assert says(daemon, "create", "-f", str(spec)) == "Hello 1.0"
        gain_hello_2(channel)
        assert says(daemon, "warm", "e") == "Hello 2.0"
    finally:
        assert daemon.stop() == 0


def test_a_long_solve_ttl_keeps_the_answer_until_update(tmp_path: Path, short_dir: Path,
                                                        engine: dict[str, str]) -> None:
    channel = growing_channel(tmp_path / "channel")
    daemon = tuned(tmp_path, short_dir, engine, solve_ttl="3600")
    try:
        spec = env_file(tmp_path / "e.yml", "e", channel.as_uri(), "hello")
        assert says(daemon, "create", "-f", str(spec)) == "Hello 1.0"
        gain_hello_2(channel)
        assert says(daemon, "warm", "e") == "Hello 1.0"
        assert says(daemon, "warm", "e", "--update") == "Hello 2.0"
    finally:
        assert daemon.stop() == 0
