"""A small async client of the OCI distribution spec (v1.1), on aiohttp.

Why not a library: the maintained OCI clients for Python (oras-py, opencontainers) are built on
``requests`` and would block the daemon's loop or need a thread per blob; aiohttp is already ours.
What it does (https://github.com/opencontainers/distribution-spec/blob/main/spec.md):

- blobs: ``HEAD`` to check existence, ``GET`` streamed into a file with the digest checked on the
  way, uploads monolithic (``POST`` + ``PUT ?digest=``) or chunked (``PATCH`` with
  ``Content-Range``, then ``PUT``), and cross-repository mounts (``POST ?mount=&from=``; a registry
  that answers 202 instead gives an upload session we use);
- manifests: ``GET`` (the digest checked when the reference is one) and ``PUT``;
- auth: a 401's ``WWW-Authenticate`` challenge decides (``challenge.py``). Credentials never reach
  a log line, an error message or the store.

localhost and 127.0.0.0/8 are reached over plain HTTP, like docker and skopeo; any other host over
HTTPS unless the caller asks for ``plain_http`` (or ``insecure``: HTTPS without verifying the
certificate).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from provisiond.daemon.oci.auth import Logins
from provisiond.daemon.oci.challenge import Authorizer, Stats, login_hint
from provisiond.domain.oci import (
    MANIFEST_TYPES,
    DigestMismatchError,
    Reference,
    RegistryAuthError,
    RegistryError,
    digest_of,
    is_loopback,
)

log = logging.getLogger(__name__)

OnBytes = Callable[[int], None]
CHUNK = 1 << 20  # read/write granularity
DEFAULT_CHUNK_SIZE = 32 << 20  # blobs larger than this are uploaded in chunks of this size
RETRIES = 3  # GET and HEAD, on a connection broken mid-operation or a 429/502/503/504
BACKOFF = 0.5  # seconds before asking again (or the registry's Retry-After, up to 10 s)


class Registry:
    """One registry endpoint (host[:port]) and the logins and tokens for it."""

    def __init__(self, session: aiohttp.ClientSession, ref: Reference, logins: Logins, *,
                 plain_http: bool = False, insecure: bool = False, timeout: float = 300.0) -> None:
        self.session = session
        self.endpoint = ref.endpoint
        self.registry = ref.registry
        self.scheme = "http" if plain_http or is_loopback(ref.registry) else "https"
        self.ssl: bool = not insecure
        self.logins = logins
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout)
        self.stats = Stats()
        self.auth = Authorizer(session, ref.registry, logins, https=self.scheme == "https", ssl=self.ssl,
                               timeout=self.timeout, stats=self.stats)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.endpoint}{path}"

    # -- requests and auth ------------------------------------------------------------------------

    async def request(self, method: str, url: str, repository: str, *, push: bool = False,
                      headers: dict[str, str] | None = None, data: Any = None,
                      ok: tuple[int, ...] = (200,)) -> aiohttp.ClientResponse:
        """One request, authenticated as the registry's challenge asks; raises unless its status is in ``ok``.

        ``data`` may be bytes or a callable returning a fresh body (a retry after a 401 re-sends it).
        """
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        retries = RETRIES if method in ("GET", "HEAD") else 0  # idempotent, and no upload session to redo
        attempt = 0
        while attempt < 2:
            auth = self.auth.header(scope)
            body = data() if callable(data) else data
            if isinstance(body, bytes) and len(body) > 1 << 20:  # aiohttp warns of a large raw body
                body = io.BytesIO(body)
            try:
                response = await self.session.request(
                    method, url, headers={**(headers or {}), **auth}, data=body, ssl=self.ssl,
                    timeout=self.timeout, allow_redirects=method in ("GET", "HEAD"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # Only once the registry has answered: a first failure is a wrong host or port, not a hiccup.
                if retries and self.stats.requests and not isinstance(exc, aiohttp.InvalidURL):
                    retries -= 1
                    log.info("registry %s: %s failed (%s); once more", self.registry, method, _reason(exc))
                    await asyncio.sleep(BACKOFF)
                    continue
                raise RegistryError(f"registry {self.registry}: {method} failed: {_reason(exc)}",
                                    hint=self._hint()) from None
            if response.status in (429, 502, 503, 504) and retries:  # busy or restarting: wait, ask again
                retries -= 1
                delay = _retry_after(response.headers.get("Retry-After"))
                response.release()
                log.info("registry %s: %s answered %d; again in %.1fs", self.registry, method, response.status, delay)
                await asyncio.sleep(delay)
                continue
            attempt += 1
            self.stats.requests += 1
            self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
            log.debug("registry %s: %s %s -> %d", self.registry, method, url.split("?")[0], response.status)
            if response.status == 401 and attempt == 1:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                if await self.auth.answer(challenge, scope):
                    continue
            if response.status in ok:
                return response
            if response.status == 401 and auth:
                response.release()
                login = self.auth.login
                who = f" of user {login.username!r}" if login is not None and login.username != "<token>" else ""
                raise RegistryAuthError(f"registry {self.registry} refused the login{who} ({method} {repository})",
                                        hint=login_hint(self.registry))
            await self._fail(response, method, url, repository)
        raise AssertionError("unreachable")

    async def _fail(self, response: aiohttp.ClientResponse, method: str, url: str, repository: str) -> None:
        status = response.status
        try:
            text = (await response.text())[:2000]
        except (aiohttp.ClientError, UnicodeDecodeError):
            text = ""
        finally:
            response.release()
        detail = _error_text(text)
        what = f"registry {self.registry}: {method} {repository}: {status}{': ' + detail if detail else ''}"
        if status in (401, 403):
            raise RegistryAuthError(what, hint=login_hint(self.registry))
        raise RegistryError(what, hint=self._hint())

    def _hint(self) -> str:
        if self.scheme == "https" and not is_loopback(self.registry):
            return "check the reference and the network; a registry without TLS needs --plain-http"
        return "check the reference, and that the registry is running"

    # -- blobs ----------------------------------------------------------------------------------

    def _blob(self, repository: str, digest: str) -> str:
        return self.url(f"/v2/{repository}/blobs/{digest}")

    async def has_blob(self, repository: str, digest: str) -> bool:
        response = await self.request("HEAD", self._blob(repository, digest), repository, ok=(200, 404))
        response.release()
        return response.status == 200

    async def mount(self, repository: str, digest: str, source: str) -> str | None:
        """Mount ``digest`` from ``source`` (same registry): None when done, else an upload URL to use."""
        query = urlencode({"mount": digest, "from": source})
        response = await self.request("POST", self.url(f"/v2/{repository}/blobs/uploads/?{query}"), repository,
                                      push=True, ok=(201, 202))
        response.release()
        if response.status == 201:
            return None
        return self._location(response)

    async def start_upload(self, repository: str) -> str:
        response = await self.request("POST", self.url(f"/v2/{repository}/blobs/uploads/"), repository,
                                      push=True, ok=(202,))
        response.release()
        return self._location(response)

    def _location(self, response: aiohttp.ClientResponse) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: an upload session without a Location")
        return urljoin(self.url("/"), location)

    async def upload(self, repository: str, digest: str, source: Path | bytes, size: int, *,
                     location: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     on_bytes: OnBytes | None = None) -> None:
        """Upload one blob: monolithic up to ``chunk_size`` bytes, else in chunks."""
        location = location or await self.start_upload(repository)
        if size > chunk_size:
            start = 0
            for chunk in _chunks(source, chunk_size):
                end = start + len(chunk)
                response = await self.request(
                    "PATCH", location, repository, push=True, data=chunk, ok=(202,),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                             "Content-Range": f"{start}-{end - 1}"})
                response.release()
                location = self._location(response)
                start = end
                self.stats.bytes_up += len(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
            body: Any = b""
        else:
            body = (lambda: _stream(source, on_bytes)) if isinstance(source, Path) else source
            if isinstance(source, bytes) and on_bytes:
                on_bytes(size)
            self.stats.bytes_up += size
        sep = "&" if "?" in location else "?"
        response = await self.request("PUT", f"{location}{sep}{urlencode({'digest': digest})}", repository,
                                      push=True, data=body, ok=(201,),
                                      headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(0 if size > chunk_size else size)})
        response.release()

    async def fetch_blob(self, repository: str, digest: str, dest: Path, *, on_bytes: OnBytes | None = None) -> int:
        """Stream a blob into ``dest``; DigestMismatchError (and no file) when its bytes do not match."""
        response = await self.request("GET", self._blob(repository, digest), repository)
        sha, size = hashlib.sha256(), 0
        try:
            with dest.open("wb") as f:
                async for chunk in response.content.iter_chunked(CHUNK):
                    sha.update(chunk)
                    await asyncio.to_thread(f.write, chunk) if len(chunk) >= CHUNK else f.write(chunk)
                    size += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
        except (aiohttp.ClientError, TimeoutError) as exc:
            dest.unlink(missing_ok=True)
            raise RegistryError(f"registry {self.registry}: blob {digest[:19]} broke off: {_reason(exc)}") from None
        finally:
            response.release()
        self.stats.bytes_down += size
        if "sha256:" + sha.hexdigest() != digest:
            dest.unlink(missing_ok=True)
            raise DigestMismatchError(f"{self.registry}/{repository}: blob {digest} has the wrong content "
                                      f"(its bytes hash to sha256:{sha.hexdigest()})",
                                      hint="the registry's copy is corrupt: push the env again")
        return size

    async def blob_bytes(self, repository: str, digest: str, limit: int = 64 << 20) -> bytes:
        response = await self.request("GET", self._blob(repository, digest), repository)
        try:
            data = await _read_all(response, limit)
        finally:
            response.release()
        if data is None:
            raise RegistryError(f"registry {self.registry}: blob {digest} is larger than {limit} bytes")
        if digest_of(data) != digest:
            raise DigestMismatchError(f"{self.registry}/{repository}: blob {digest} has the wrong content",
                                      hint="the registry's copy is corrupt: push again")
        self.stats.bytes_down += len(data)
        return data

    # -- manifests ------------------------------------------------------------------------------

    async def manifest(self, repository: str, reference: str, accept: tuple[str, ...] = MANIFEST_TYPES
                       ) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest; a digest reference is checked against the bytes."""
        response = await self.request("GET", self.url(f"/v2/{repository}/manifests/{reference}"), repository,
                                      headers={"Accept": ", ".join(accept)}, ok=(200, 404))
        try:
            if response.status == 404:
                raise RegistryError(f"{self.registry}/{repository}:{reference}: no such manifest",
                                    hint="check the reference (list tags with: skopeo list-tags)")
            data = await _read_all(response, 16 << 20)
            media = response.headers.get("Content-Type", "").split(";")[0].strip()
            if data is None:
                raise RegistryError(f"{self.registry}/{repository}:{reference}: a manifest larger than 16 MiB")
        finally:
            response.release()
        digest = digest_of(data)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(f"{self.registry}/{repository}@{reference}: the manifest has the wrong content")
        return data, media, digest

    async def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        response = await self.request("PUT", self.url(f"/v2/{repository}/manifests/{reference}"), repository,
                                      push=True, data=data, ok=(201, 200),
                                      headers={"Content-Type": media_type})
        response.release()
        return response.headers.get("Docker-Content-Digest") or digest_of(data)


@asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for one operation (its connections end with it)."""
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=True) as s:
        yield s


def _retry_after(value: str | None) -> float:
    try:
        return min(10.0, max(0.0, float(value))) if value else BACKOFF
    except ValueError:
        return BACKOFF


async def _read_all(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body (``StreamReader.read(n)`` returns what has arrived, not n bytes); None past ``limit``."""
    parts, size = [], 0
    async for chunk in response.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _chunks(source: Path | bytes, size: int) -> Any:
    if isinstance(source, bytes):
        for start in range(0, len(source), size):
            yield source[start:start + size]
        return
    with source.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


async def _stream(path: Path, on_bytes: OnBytes | None) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            if on_bytes:
                on_bytes(len(chunk))
            yield chunk


def _error_text(text: str) -> str:
    """The registry's error codes and messages (``{"errors": [{"code", "message"}]}``), short."""
    import json

    try:
        errors = json.loads(text).get("errors") or []
        return "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)[:300]
    except (ValueError, AttributeError):
        return text.strip().splitlines()[0][:200] if text.strip() else ""


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
