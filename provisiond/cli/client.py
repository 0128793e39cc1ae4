"""A tiny client for the daemon: HTTP/1.1 over AF_UNIX on a raw socket.

provisionctl imports only this on its way to the socket. It does not use ``http.client``
(16 ms of imports: email, ssl), aiohttp, ruamel or rattler, so a command costs about as much as
starting Python. The daemon answers every request with Content-Length or chunked encoding and
closes the connection (we send ``Connection: close``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from provisiond.config.peers import trusted, untrusted_message
from provisiond.domain.errors import ConfigError, DaemonUnavailableError, ProvisionError

_CRASH_HINT = "check its log (journalctl --user -u provisiond)"


class Client:
    """``request()`` returns decoded JSON (or text), or raises the daemon's ProvisionError unchanged."""

    def __init__(self, socket_path: Any, timeout: float | None = None) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            import os

            from provisiond.config.units import down_hint

            raise DaemonUnavailableError(
                f"provisiond is not running (cannot connect to {self.socket_path}: {exc.strerror})",
                hint=down_hint(self.socket_path, os.environ),
            ) from None
        except OSError as exc:  # not a socket, a file in the way, no permission, a path too long
            sock.close()
            raise DaemonUnavailableError(f"cannot connect to {self.socket_path}: {exc.strerror or exc}",
                                         hint="check --socket / PROVISIOND_SOCKET") from None
        except BaseException:
            sock.close()
            raise
        uid = trusted(sock, self.socket_path)
        if uid is not None:  # someone else's process: do not send it anything, do not believe it
            sock.close()
            message, hint = untrusted_message(self.socket_path, uid)
            raise ConfigError(message, hint=hint)
        return sock

    def _send(self, sock: socket.socket, method: str, path: str, body: dict[str, Any] | None,
              query: dict[str, str] | None) -> None:
        if query:
            from urllib.parse import urlencode

            path = f"{path}?{urlencode(query)}"
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: provisiond\r\nConnection: close\r\n"
                f"Content-Length: {len(payload)}\r\n")
        if body is not None:
            head += "Content-Type: application/json\r\n"
        sock.sendall(head.encode("utf-8") + b"\r\n" + payload)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None) -> Any:
        sock = self._connect()
        try:
            self._send(sock, method, path, body, query)
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        except ConnectionError as exc:
            raise DaemonUnavailableError(f"provisiond closed the connection ({exc})", hint=_CRASH_HINT) from None
        finally:
            sock.close()
        status, headers, data = _parse(b"".join(chunks))
        if status >= 400:
            try:
                error = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                raise ProvisionError(f"provisiond failed ({status})", hint=_CRASH_HINT) from None
            raise ProvisionError.from_wire(error)
        if headers.get("content-type", "").startswith("application/json"):
            return json.loads(data)
        return data.decode("utf-8", errors="replace")

    def stream(self, path: str) -> Iterator[str]:
        """Lines of a streamed answer (server-sent events), as they arrive."""
        sock = self._connect()
        try:
            self._send(sock, "GET", path, None, None)
            reader = sock.makefile("rb")
            status_line = reader.readline()
            status = int(status_line.split()[1]) if status_line.count(b" ") >= 1 else 0
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = _dechunk_stream(reader) if headers.get("transfer-encoding") == "chunked" else iter(reader)
            if status >= 400:
                error = json.loads(b"".join(body))["error"]
                raise ProvisionError.from_wire(error)
            pending = b""
            for piece in body:
                pending += piece
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    yield line.decode("utf-8", errors="replace")
        finally:
            sock.close()

    def get(self, path: str, /, **query: str) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body or {})

    def delete(self, path: str, /, **query: str) -> Any:
        return self.request("DELETE", path, query=query or None)


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise DaemonUnavailableError("provisiond sent no answer (did it crash?)", hint=_CRASH_HINT) from None
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def _dechunk_stream(reader: Any) -> Iterator[bytes]:
    while True:
        size = int(reader.readline().split(b";")[0] or b"0", 16)
        if size == 0:
            return
        yield reader.read(size)
        reader.readline()


def segment(name: str) -> str:
    """A name as one URL path segment."""
    from urllib.parse import quote

    return quote(name, safe="")
