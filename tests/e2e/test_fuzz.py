"""Fuzz a live daemon from its OpenAPI document with schemathesis: no answer is a 5xx.

Every documented operation gets valid and invalid requests (schemathesis' positive and negative
modes), on a throwaway store that holds one built project, so the name and build-id routes meet
real objects as well as random ones. Derandomized: the same requests on every run.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from provisiond.daemon.api.routes import OPENAPI
from tests.conftest import Daemon, write_project

EXAMPLES = 25  # per operation and mode: ~1000 requests, about 20 s on 2 busy cores


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__("localhost", **kwargs)
        self.socket_path = path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(self.socket_path)
        return sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.socket_path = path

    def _new_conn(self) -> HTTPConnection:
        return _UnixConnection(self.socket_path)


class UnixAdapter(HTTPAdapter):
    """requests over the daemon's Unix socket, whatever host the URL names."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.pool = _UnixPool(str(path))

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> HTTPConnectionPool:
        return self.pool

    def close(self) -> None:
        self.pool.close()
        super().close()


def test_fuzz_the_api_from_its_openapi_document(channel: Path, tmp_path: Path, short_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths the fuzzer sends resolve in this empty directory
    daemon = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock").start()
    try:
        project = write_project(tmp_path / "proj", channel, ["hello"], name="p1")
        assert daemon.ctl("warm", str(project))[0] == 0
        build_id = daemon.client.get("/v1/builds")["builds"][0]["id"]
        counts = fuzz(daemon, {"name": "p1", "id": build_id})
        assert daemon.client.get("/v1/health")["status"] == "ok"
    finally:
        code = daemon.stop()
    log = daemon.log.read_text() if daemon.log else ""
    assert code == 0 and "Traceback" not in log, log[-3000:]
    statuses = Counter(status for (_op, status), n in counts.items() for _ in range(n))
    per_operation = Counter(op for (op, _status), n in counts.items() for _ in range(n))
    assert not [s for s in statuses if s >= 500], statuses
    # It cannot pass by sending nothing: every operation was exercised, with answers of both kinds.
    assert len(per_operation) == len(operations()), per_operation
    assert sum(1 for n in per_operation.values() if n >= EXAMPLES) >= 14, per_operation  # all with inputs
    ok_operations = {op for (op, status) in counts if status < 300}
    assert len(ok_operations) >= 10, ok_operations
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) >= 100, statuses


def operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(str(OPENAPI))
    ops = [result.ok() for result in schema.get_all_operations()]
    # Destructive ones last, so that the others meet the built env first.
    return sorted(ops, key=lambda op: (op.method.upper() == "DELETE" or op.path == "/v1/gc", op.path, op.method))


def fuzz(daemon: Daemon, known: dict[str, Any]) -> Counter[tuple[str, int]]:
    """Send every operation's cases; return how many answers each (operation, status) got."""
    counts: Counter[tuple[str, int]] = Counter()
    session = requests.Session()
    session.mount("http://", UnixAdapter(daemon.socket))
    try:
        for op in operations():
            label = f"{op.method.upper()} {op.path}"
            known_here = {k: v for k, v in known.items() if "{" + k + "}" in op.path}
            strategies = [op.as_strategy(generation_mode=mode) for mode in GenerationMode]
            if known_here:
                strategies.append(op.as_strategy(path_parameters=known_here))
            run = settings(max_examples=EXAMPLES * len(strategies), deadline=None, database=None, derandomize=True,
                           suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate))(
                given(case=st.one_of(strategies))(lambda case: send(session, case, label, counts)))  # noqa: B023
            run()  # in this iteration: label is the one the lambda saw
    finally:
        session.close()
    return counts


def send(session: requests.Session, case: Any, label: str, counts: Counter[tuple[str, int]]) -> None:
    response = case.call(base_url="http://provisiond", session=session)
    counts[(label, response.status_code)] += 1
    assert response.status_code < 500, (label, case.as_curl_command(), response.status_code, response.text[:500])
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                             response_schema_conformance])
    if response.status_code >= 400:
        error = json.loads(response.content)["error"]
        assert error["code"] and error["message"], (label, error)
