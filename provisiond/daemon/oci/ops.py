"""push, pull and image as daemon operations: each has an id and a stream of progress events.

Phases: ``start`` (blobs, total bytes), ``bytes`` (at most ten a second), ``blob`` (one per blob:
``skipped``, ``mounted``, ``uploaded`` or ``downloaded``), pull's ``build``,
image's ``layer``, then ``done`` (with the operation's answer as ``result``) or ``failed``
(``error``: code, message, hint). ``GET /v1/transfers/{id}/events`` follows one; the POST that
starts it can stream them itself (``Accept: text/event-stream``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from provisiond.daemon import trust
from provisiond.daemon.oci import pull as pulling
from provisiond.daemon.oci.auth import Logins, default_auth_files
from provisiond.daemon.oci.client import DEFAULT_CHUNK_SIZE, Registry, session
from provisiond.daemon.oci.push import Archives, Counts, push_env, remove, scratch_dir
from provisiond.domain.errors import BadRequestError, ProvisionError
from provisiond.domain.events import BuildEvents, BuildProgress
from provisiond.domain.oci import Reference, is_loopback, parse_reference
from provisiond.store.credentials import Credentials

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from provisiond.daemon.provisioner import Provisioner

log = logging.getLogger(__name__)


class _Throttled(BuildProgress):
    """``bytes`` events at most ten a second; every other phase as it comes."""

    def emit(self, phase: str, **fields: Any) -> None:
        if phase == "bytes":
            now = time.monotonic()
            if now - self._last_download < 0.1:
                return
            self._last_download = now
        super().emit(phase, **fields)


class Transfers:
    """The daemon's push/pull/image operations and their event streams."""

    def __init__(self, provisioner: Provisioner) -> None:
        self.p = provisioner
        self.events = BuildEvents()
        self._ids = itertools.count(1)

    def logins(self) -> Logins:
        configured = self.p.settings.registry_auth_file
        return Logins([configured] if configured else default_auth_files())

    def start(self, work: Callable[[BuildProgress], Awaitable[dict[str, Any]]]) -> tuple[int, asyncio.Task[Any]]:
        """Run ``work`` as an operation: (its id, its task); the task ends its stream either way."""
        op_id = next(self._ids)
        self.events.open(op_id)
        progress = _Throttled(self.events, op_id)

        async def run() -> dict[str, Any]:
            try:
                result = await work(progress)
            except ProvisionError as exc:
                progress.emit("failed", error=exc.to_wire())
                raise
            except BaseException as exc:
                progress.emit("failed", error={"code": "internal", "message": f"{type(exc).__name__}: {exc}",
                                               "hint": None})
                raise
            progress.emit("done", result=result)
            return result

        return op_id, asyncio.ensure_future(run())

    @asynccontextmanager
    async def registry(self, ref: Reference, *, plain_http: bool, insecure: bool) -> AsyncIterator[Registry]:
        if not (plain_http or is_loopback(ref.registry)) and ref.registry in self.p.settings.insecure_registries:
            plain_http = True
        async with session() as s:
            yield Registry(s, ref, self.logins(), plain_http=plain_http, insecure=insecure,
                           timeout=self.p.settings.connect_timeout + self.p.settings.fetch_timeout)

    # -- push -------------------------------------------------------------------------------------

    async def push(self, target: str, reference: str, progress: BuildProgress | None, *, tags: list[str],
                   mount_from: list[str], plain_http: bool = False, insecure: bool = False,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, Any]:
        ref = parse_reference(reference)
        if ref.digest:
            raise BadRequestError(f"{reference}: push to a tag, not a digest", hint="HOST/REPO[:TAG]")
        record = self.p._lookup(target)
        lock = self.p.lock_of(record.name)
        tags = list(tags) + ([ref.tag] if ref.tag and ref.tag not in tags else [])
        # A pulled env's blobs are in the repository it came from: mounted from there on the same
        # registry, copied from there to another one (its archives are not kept, its channel may be gone).
        source = parse_reference(record.source) if record.kind == "oci" and record.source else None
        if source is not None and source.registry == ref.registry and source.repository != ref.repository:
            mount_from = [*mount_from, source.repository]
        credentials = Credentials(self.p.settings.paths.credentials)
        scratch = scratch_dir(self.p.settings.paths.pkgs.parent / "cache" / "oci")
        try:
            async with self.registry(ref, plain_http=plain_http, insecure=insecure) as registry:
                origin = None
                if source is not None and source.registry != ref.registry:
                    origin = (Registry(registry.session, source, self.logins(), plain_http=plain_http,
                                       insecure=insecure, timeout=registry.timeout.sock_read or 300.0),
                              source.repository)
                archives = Archives(self.p.settings.paths.pkgs, registry.session, credentials.attach, scratch,
                                    origin)
                return await push_env(registry, ref, lock, record.name, archives, tags=tags,
                                      mount_from=mount_from, chunk_size=chunk_size, progress=progress)
        finally:
            await asyncio.to_thread(remove, scratch)

    # -- pull -------------------------------------------------------------------------------------

    async def pull(self, reference: str, name: str | None, progress: BuildProgress | None, *,
                   plain_http: bool = False, insecure: bool = False) -> dict[str, Any]:
        from provisiond.daemon.provisioner import check_name

        ref = parse_reference(reference)
        paths = self.p.settings.paths
        scratch = scratch_dir(paths.pkgs.parent / "cache" / "oci")
        try:
            async with self.registry(ref, plain_http=plain_http, insecure=insecure) as registry:
                lock, manifest, digest = await pulling.read_env(registry, ref)
                name = check_name(name or pulling.default_name(manifest, ref))
                taken = self.p.store.find_name(name)
                if taken is not None and taken.kind != "oci":
                    raise BadRequestError(f"the name {name!r} is already used by a {taken.kind} env",
                                          hint="choose another name with -n NAME")
                pulling.check_platform(lock, self.p.engine.platform, ref)
                if self.p.store.find_env(lock.env_key) is not None:  # built here already: nothing to fetch
                    n = len(lock.packages)
                    counts = Counts(blobs=n, skipped=n)
                else:
                    counts = await pulling.fetch_packages(registry, ref, lock, manifest, paths.pkgs, scratch,
                                                          progress)
        finally:
            await asyncio.to_thread(remove, scratch)
        if progress is not None:
            progress.emit("build", packages=len(lock.packages))
        source = str(ref.with_tag(ref.tag, digest))
        self.p.gate.consent(trust.lock_fingerprint(lock, source))  # pulling it is asking for it
        self.p.store.add_name(name, "oci", source)
        await self.p.lifecycle.install(self.p.store.get_name(name), lock)
        view = self.p.view(name).to_wire()
        return {**view, "reference": source, "digest": digest, **counts.to_wire(),
                "requests": registry.stats.requests}

    # -- image ------------------------------------------------------------------------------------

    async def image(self, target: str, base: str, tag: str, progress: BuildProgress | None, *,
                    plain_http: bool = False, insecure: bool = False) -> dict[str, Any]:
        from provisiond.daemon.oci import image

        record = self.p._lookup(target)
        env = self.p.view(record.name)
        if not env.prefix:
            raise BadRequestError(f"{record.name!r} has no built env", hint=f"run: provisionctl warm {record.name}")
        base_ref, ref = parse_reference(base), parse_reference(tag)
        lock = self.p.lock_of(record.name)
        paths = self.p.settings.paths
        scratch = scratch_dir(paths.pkgs.parent / "cache" / "oci")
        try:
            async with self.registry(ref, plain_http=plain_http, insecure=insecure) as target_registry, \
                    self.registry(base_ref, plain_http=plain_http, insecure=insecure) as base_registry:
                return await image.build_image(paths, record.name, lock, base_registry, base_ref, target_registry,
                                               ref, scratch, progress)
        finally:
            await asyncio.to_thread(remove, scratch)
