"""A tiny stdlib client for the daemon (http.client over AF_UNIX).

provisionctl imports only this on its way to the socket, so it starts in tens of
milliseconds: no aiohttp, ruamel or rattler here.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from provisiond.errors import DaemonUnavailableError, ProvisionError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("provisiond", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """``request()`` returns decoded JSON, or raises the daemon's ProvisionError unchanged."""

    def __init__(self, socket_path: Path, timeout: float | None = None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        if query:
            path = f"{path}?{urlencode(query)}"
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise DaemonUnavailableError(
                    f"provisiond is not running (cannot connect to {self.socket_path}: {exc.strerror})",
                    hint="start it with: scripts/run   (or: provisiond &)",
                ) from None
            except (ConnectionError, http.client.HTTPException) as exc:
                raise DaemonUnavailableError(f"provisiond closed the connection ({exc})",
                                             hint="check its log (journalctl --user -u provisiond)") from None
        finally:
            conn.close()
        content_type = response.getheader("Content-Type", "")
        if response.status >= 400:
            try:
                error = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                raise ProvisionError(f"provisiond failed ({response.status})",
                                     hint="check its log (journalctl --user -u provisiond)") from None
            raise ProvisionError.from_wire(error)
        if content_type.startswith("application/json"):
            return json.loads(data)
        return data.decode("utf-8", errors="replace")

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body or {})

    def delete(self, path: str, **query: str) -> Any:
        return self.request("DELETE", path, query=query or None)


def segment(name: str) -> str:
    """A name as one URL path segment."""
    return quote(name, safe="")
