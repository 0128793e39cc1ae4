"""Safe to leave running: malformed requests get a JSON 4xx, stalled and surplus clients are let go,
and a big environment file does not stall the daemon. A real daemon on a real socket."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.domain.spec import MAX_SPEC_BYTES
from tests.conftest import Daemon


def exchange(daemon: Daemon, data: bytes, timeout: float = 60) -> bytes:
    """Send raw bytes; return everything the daemon sends until it closes the connection."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)  # a safety net, never reached when the daemon behaves
        sock.connect(str(daemon.socket))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split()[1]), json.loads(body)


def assert_no_traceback(daemon: Daemon) -> None:
    assert daemon.log is not None
    assert "Traceback" not in daemon.log.read_text()


@pytest.fixture
def tight_daemon(tmp_path: Path, short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A daemon with a 1 s read timeout and room for 4 connections."""
    monkeypatch.setenv("PROVISIOND_READ_TIMEOUT", "1")
    monkeypatch.setenv("PROVISIOND_MAX_CONNECTIONS", "4")
    d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock").start()
    yield d
    assert d.stop() == 0


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nno colon here\r\n\r\n",
    b"POST /v1/envs HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
    b"GET /v1/\x00 HTTP/1.1\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /v1/health HTTP/9.9\r\n\r\n",
], ids=["method", "header", "content-length", "nul", "huge-header", "version"])
def test_malformed_http_gets_a_json_400(daemon: Daemon, request_bytes: bytes) -> None:
    status, body = answer(exchange(daemon, request_bytes))
    assert status == 400 and body["error"]["code"] == "bad-request", body
    assert body["error"]["message"].startswith("malformed HTTP request: ") and body["error"]["hint"]
    assert daemon.client.get("/v1/health")["status"] == "ok"
    assert_no_traceback(daemon)


def test_odd_inputs_get_a_4xx_and_leave_no_traceback(daemon: Daemon, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    long = "/tmp/" + "x" * 300
    cases = [
        ("GET", "/v1/builds/%C2%B2", None),  # '²': str.isdigit() says yes, int() says no
        ("GET", "/v1/builds/%D9%A3", None),  # Arabic-Indic three
        ("POST", "/v1/envs", b"[" * 1000 + b"]" * 1000),  # RecursionError in json.loads
        ("POST", "/v1/envs", b'{"a": ' * 5000 + b"1" + b"}" * 5000),
        ("POST", "/v1/envs", {"file": long}),  # ENAMETOOLONG
        ("POST", "/v1/projects", {"path": long}),
        ("DELETE", f"/v1/projects?project={long}", None),
        ("POST", "/v1/envs/..%2F" + "y" * 300 + "/warm", {}),
        ("DELETE", "/v1/envs/..%2F" + "y" * 300, None),
        ("POST", "/v1/envs", {"file": str(loop)}),  # ELOOP / "Symlink loop"
        ("POST", "/v1/projects", {"path": str(loop / "x")}),
        ("DELETE", f"/v1/projects?project={loop}", None),
        ("GET", f"/v1/envs/{str(loop).replace('/', '%2F')}/export", None),
        ("POST", "/v1/envs", b'{"file": "/tmp/\\ud800"}'),  # a lone surrogate
        ("POST", "/v1/projects", b'{"path": "\\ud800"}'),
        ("POST", "/v1/envs", b'{"file": "/tmp/x.yml", "name": "\\udfff"}'),
        ("POST", "/v1/envs/x/clone", b'{"target": "\\ud800"}'),
        ("POST", "/v1/envs", b'{"file": "' + b"a" * (2 << 20) + b'"}'),  # over 1 MiB: 413
    ]
    for method, path, body in cases:
        status, answer_ = daemon.raw(method, path, body)
        assert 400 <= status < 500 and answer_["error"]["code"], (method, path[:80], status, answer_)
    assert daemon.client.get("/v1/health")["status"] == "ok"
    assert_no_traceback(daemon)


def test_a_client_that_stalls_in_its_request_head_is_disconnected(tight_daemon: Daemon) -> None:
    # Without a read timeout aiohttp waits an hour (keepalive_timeout=3630): recv() would time out.
    assert exchange(tight_daemon, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n") == b""
    assert exchange(tight_daemon, b"") == b""  # connects, sends nothing


def test_a_client_that_stalls_in_its_body_gets_a_408(tight_daemon: Daemon) -> None:
    raw = exchange(tight_daemon, b'POST /v1/envs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"fi')
    status, body = answer(raw)
    assert (status, body["error"]["code"]) == (408, "request-timeout")
    assert_no_traceback(tight_daemon)


def test_connections_over_the_limit_get_a_503(tight_daemon: Daemon) -> None:
    idle = [socket.socket(socket.AF_UNIX) for _ in range(4)]
    try:
        for sock in idle:
            sock.connect(str(tight_daemon.socket))
        # The daemon registers a connection when its loop accepts it: the fifth is refused once
        # the four are in; ask until then (each refused one is answered and closed at once).
        deadline = time.monotonic() + 30
        while True:
            raw = exchange(tight_daemon, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = answer(raw)
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert (status, body["error"]["code"]) == (503, "busy"), body
        assert "4 connections" in body["error"]["message"]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30
    while tight_daemon.raw("GET", "/v1/health")[0] != 200:  # the four are let go as their closes arrive
        assert time.monotonic() < deadline, "the daemon never took connections again"
        time.sleep(0.01)
    assert_no_traceback(tight_daemon)


def test_an_oversized_environment_file_is_refused_before_it_is_parsed(daemon: Daemon, tmp_path: Path) -> None:
    """A 15 MB file used to hold the daemon's loop for 33 s; now it is not even read past the limit."""
    big = tmp_path / "environment.yml"
    with open(big, "w") as f:
        f.write("name: big\ndependencies:\n")
        f.write("  - numpy\n" * 1_500_000)
    status, body = daemon.raw("POST", "/v1/envs", {"file": str(big)})
    assert (status, body["error"]["code"]) == (400, "invalid-spec")
    assert body["error"]["message"] == f"{big}: larger than 1 MiB; not an environment file (not parsed)"
    assert f"parsing {big}" not in (daemon.log.read_text() if daemon.log else "")


def test_health_answers_while_an_environment_file_is_parsed(daemon: Daemon, tmp_path: Path) -> None:
    """Ordering, not timing: health is answered while a near-limit file is still being parsed.

    The file ends in a syntax error, so its create answers the moment the parse ends. Parsed on
    the daemon's loop, that answer is written before the loop can even read the health request.
    """
    slow = tmp_path / "environment.yml"
    text = "name: slow\ndependencies:\n" + "  - numpy\n" * ((MAX_SPEC_BYTES - 100) // 10) + "  - [unclosed\n"
    slow.write_text(text)
    assert slow.stat().st_size <= MAX_SPEC_BYTES
    with socket.socket(socket.AF_UNIX) as create:
        create.settimeout(120)
        create.connect(str(daemon.socket))
        body = json.dumps({"file": str(slow)}).encode()
        create.sendall(b"POST /v1/envs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert daemon.log is not None
        deadline = time.monotonic() + 60
        while f"parsing {slow}" not in daemon.log.read_text():  # the parse has begun
            assert time.monotonic() < deadline, "the daemon never started parsing"
            time.sleep(0.01)
        assert daemon.client.get("/v1/health")["status"] == "ok"
        readable, _, _ = select.select([create], [], [], 0)
        assert not readable, "the create was answered before health: the parse held the loop"
        chunks = []
        while chunk := create.recv(65536):
            chunks.append(chunk)
    status, answer_ = answer(b"".join(chunks))
    assert (status, answer_["error"]["code"]) == (400, "invalid-spec")
    assert answer_["error"]["message"].startswith(f"{slow}:")


def test_concurrent_clients_all_get_answers(daemon: Daemon) -> None:
    """Well under the connection limit, every client is served."""
    results: list[int] = []

    def ask() -> None:
        results.append(daemon.raw("GET", "/v1/health")[0])

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 16
    assert os.path.exists(daemon.socket)
