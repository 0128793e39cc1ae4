"""py-rattler, in-process: the embedded default engine.

The gateway (repodata) lives as long as the engine, so a re-solve after an edit costs
milliseconds instead of re-reading every channel's repodata. What it holds is checked again
once it is older than the solve's ``max_age`` (the ``solve_ttl`` setting): a ``file://`` channel
by the mtime of its repodata files, an HTTP one through rattler's on-disk cache, which asks the
server with the ETag / Last-Modified validators it kept (or trusts the server's Cache-Control).

Time limits (py-rattler 0.28 offers one limit per HTTP request and none for connecting or reading
alone): each channel not in memory is probed first, and must deliver its index within
``connect_timeout + fetch_timeout`` seconds; the whole solve is limited by ``solve_timeout``
(also given to the solver, whose thread cannot be cancelled); an install stops when a package
download makes no progress for ``connect_timeout + fetch_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import rattler
import rattler.exceptions as rx
from rattler.networking import (
    AddHeadersMiddleware,
    AuthenticationMiddleware,
    Client,
    GCSMiddleware,
    MirrorMiddleware,
    OciMiddleware,
    RetryMiddleware,
    S3Middleware,
)

from provisiond.config.settings import Settings
from provisiond.domain.channels import with_defaults
from provisiond.domain.errors import ChannelTimeoutError, EngineError, SolveError
from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock, Package
from provisiond.domain.lockfiles import package_of
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import mask, strip_credentials
from provisiond.engines import repodata, virtual
from provisiond.engines._pool import solve_restricted
from provisiond.engines._watch import Reporter, cached, settle
from provisiond.engines.base import OnLine
from provisiond.store.credentials import Credentials
from provisiond.store.pkgcache import share

log = logging.getLogger(__name__)

# A request for a package may not take longer than this, in any case: rattler keeps fetching into
# its cache after an install is cancelled (its own task), so a hung server must end it some day.
PACKAGE_REQUEST_LIMIT = 3600
# Asked of each channel not in memory: loads its index (the whole repodata.json, or the shard
# index) and matches nothing, so no record is converted to Python.
_PROBE = "__provisiond-probe__"


class RattlerEngine:
    name = "rattler"
    builds_in_place = False

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.platform = str(rattler.Subdir.current())
        self._channel_config = rattler.ChannelConfig(channel_alias=settings.channel_alias)
        self.credentials = Credentials(settings.paths.credentials)
        self._generation = self.credentials.generation
        self._client, self._gateway = self._connect()
        environ = dict(os.environ if environ is None else environ)
        self._virtual = virtual.VirtualPackages(virtual.detect(), lambda: virtual.detect_in_subprocess(environ))
        # Channel base URL -> (monotonic time its repodata was loaded or checked, file stamp).
        self._checked: dict[str, tuple[float, object]] = {}
        # Channel base URL -> file:// URL of a local copy of its repodata (an OCI mirror's, kept by
        # daemon/oci/mirror.py): solved from there, recorded with the channel's URLs.
        self.repodata_sources: dict[str, str] = {}

    def _network(self) -> tuple[Client, rattler.Gateway]:
        """The HTTP client and the gateway that uses it, rebuilt when the credentials changed."""
        if self._generation != self.credentials.generation:
            self._generation = self.credentials.generation
            # A new gateway forgets the repodata it holds in memory: only when credentials change.
            self._client, self._gateway = self._connect()
            self._checked.clear()
        return self._client, self._gateway

    @property
    def _stall_limit(self) -> float:
        return self.settings.connect_timeout + self.settings.fetch_timeout

    def _connect(self) -> tuple[Client, rattler.Gateway]:
        """An HTTP client for packages and a gateway for repodata, for the current credentials.

        rattler only ever sees credential-free URLs, so its repodata cache, package cache and the
        envs' conda-meta hold no secret: the first two middlewares put the token back into the
        path and the password into a header, in memory, on the way out. The rest is rattler's
        default stack (``Client.default_client``). A repodata request may take ``connect_timeout
        + fetch_timeout`` seconds; a package download is watched by ``install`` instead (a big
        package may take long while it makes progress).
        """
        def client(timeout: int) -> Client:
            middlewares: list[Any] = [AddHeadersMiddleware(self.credentials.headers)]
            if mirrors := self.credentials.mirrors():
                middlewares.append(MirrorMiddleware(mirrors))
            middlewares += [RetryMiddleware(), AuthenticationMiddleware(), OciMiddleware(), GCSMiddleware(),
                            S3Middleware()]
            return Client(middlewares, timeout=timeout)

        repodata = client(max(1, math.ceil(self._stall_limit)))
        # Offline (the `offline` setting): repodata comes from the on-disk cache only, however old.
        config = rattler.SourceConfig(cache_action="force-cache-only") if self.settings.offline else None
        gateway = rattler.Gateway(cache_dir=self.settings.paths.repodata_cache, client=repodata, default_config=config)
        return client(PACKAGE_REQUEST_LIMIT), gateway

    @functools.cached_property
    def _version(self) -> str:
        from importlib.metadata import version

        return f"py-rattler {version('py-rattler')}"

    def version(self) -> str:
        return self._version

    def virtual_packages(self) -> list[str]:
        return self._virtual.current()

    def channel(self, name: str) -> rattler.Channel:
        return rattler.Channel(name, self._channel_config)

    def channels_of(self, spec: EnvSpec) -> list[rattler.Channel]:
        """The spec's channels in priority order, then channels named only in ``channel::pkg``.

        Without credentials: those are kept by ``self.credentials`` for the downloads.
        """
        listed = with_defaults(spec.channels, spec.nodefaults, self.settings.default_channels)
        channels = [self._clean(self.channel(c)) for c in listed]
        seen = {c.base_url for c in channels}
        for dep in spec.dependencies:
            pinned = rattler.MatchSpec(dep, strict=False).channel
            if pinned is not None:
                pinned = self._clean(pinned)
                if pinned.base_url not in seen:
                    channels.append(pinned)
                    seen.add(pinned.base_url)
        return channels

    def channel_urls(self, spec: EnvSpec) -> list[str]:
        return [strip_credentials(c.base_url) for c in self.channels_of(spec)]

    def _clean(self, channel: rattler.Channel) -> rattler.Channel:
        clean = self.credentials.remember(channel.base_url)
        return channel if clean == channel.base_url else self.channel(clean)

    async def solve(self, spec: EnvSpec, *, refresh: bool = False, max_age: float = float("inf"),
                    platform: str | None = None, virtual_packages: Sequence[str] | None = None,
                    locked: Sequence[Package] = (), extend: Sequence[str] = ()) -> Lock:
        """Solve ``spec`` for ``platform`` (default: this machine's, with its virtual packages).

        The dependencies are handed to the solver in their canonical (sorted) order, the one
        spec_key uses: the solver's answer depends on input order, and two files that differ
        only in order must get the same env. ``locked``: packages to prefer (a previous lock).
        ``extend``: the names ``spec`` adds to ``locked``; the solver is first given a pool of
        only ``locked`` and every record reachable from those names (``_pool.solve_restricted``), and the
        whole channels when that pool has no solution.
        """
        channels = self.channels_of(spec)
        platform = platform or self.platform
        virtual = self.virtual_packages() if virtual_packages is None else list(virtual_packages)
        _client, gateway = self._network()
        if not channels:
            raise SolveError(f"{spec.source or 'spec'}: no channels to solve from",
                             hint="add a 'channels:' list to the environment file")
        subdirs = [platform, "noarch"]
        # A mirrored channel's repodata from its OCI mirror (daemon/oci/mirror.py), its records pointed back
        sources = [self.channel(self.repodata_sources[c.base_url]) if c.base_url in self.repodata_sources else c
                   for c in channels]
        mirrored = {s.base_url: c.base_url for s, c in zip(sources, channels) if s is not c}
        unloaded = self._freshen(gateway, sources, subdirs, refresh=refresh, max_age=max_age)
        priority = (rattler.ChannelPriority.Strict if spec.channel_priority == "strict"
                    else rattler.ChannelPriority.Disabled)
        limit = self.settings.solve_timeout
        deadline = time.monotonic() + limit
        try:
            async with asyncio.timeout(limit):
                if spec.dependencies:
                    await self._probe(gateway, unloaded, subdirs)
                specs = [rattler.MatchSpec(strip_credentials(d), strict=False) for d in sorted(set(spec.dependencies))]
                records = None
                if extend and locked:
                    pinned = [(p.name, _record(self._clean_package(p))) for p in locked]
                    records = await solve_restricted(gateway, sources, subdirs, specs, pinned, extend,
                                                     [_generic(v) for v in virtual], deadline)
                records = records if records is not None else await rattler.solve(
                    sources=sources,
                    # Parse leniently, like the spec validator: solve() parses strings strictly and
                    # rejects the common `name=version=build` form of exports.
                    specs=specs,
                    gateway=gateway,
                    platforms=subdirs,  # type: ignore[arg-type]  # the stub wants Literal platform names
                    locked_packages=[_record(self._clean_package(p)) for p in locked] or None,
                    virtual_packages=[_generic(v) for v in virtual],
                    channel_priority=priority,
                    timestamp_policy="allow-missing",
                    # The solver runs in a thread that cancellation cannot stop: it stops itself.
                    timeout=datetime.timedelta(seconds=max(0.001, deadline - time.monotonic())),
                ) if spec.dependencies else []
        except TimeoutError:
            raise EngineError(f"{spec.source or 'spec'}: the solve took longer than solve_timeout={limit:g}s",
                              hint="raise solve_timeout (docs/configuration.md), or check the channels") from None
        except rx.SolverError as exc:
            if time.monotonic() >= deadline:  # the solver's own time limit
                raise EngineError(f"{spec.source or 'spec'}: the solve took longer than solve_timeout={limit:g}s",
                                  hint="raise solve_timeout (docs/configuration.md)") from None
            raise SolveError(f"{spec.source or 'spec'}: cannot be solved:\n{exc}",
                             hint="relax a version pin or add the channel that has the package") from None
        except (rx.GatewayError, rx.FetchRepoDataError, rx.InvalidChannelError, rx.IoError) as exc:
            text = mask(str(exc))
            if "timed out" in text:
                raise ChannelTimeoutError(f"a channel did not answer in time: {text}",
                                          hint=self._timeout_hint()) from None
            if repodata.is_data_error(text):
                raise repodata.data_error(text, [c.base_url for c in channels], subdirs,
                                          self.settings.paths.repodata_cache) from None
            raise EngineError(f"cannot read channel repodata: {text}",
                              hint="check the channel URLs and your network") from None
        return Lock(
            platform=platform,
            packages=tuple(_origin(package_of(r), mirrored) for r in records),
            channels=tuple(c.base_url for c in channels),
            engine=self.name,
            meta={"channel_priority": spec.channel_priority},
        )

    def _timeout_hint(self, channels: str = "the channel server") -> str:
        return (f"check that {channels} answers; on a slow link raise fetch_timeout (now "
                f"{self.settings.fetch_timeout:g}s) or connect_timeout (now {self.settings.connect_timeout:g}s), "
                "see docs/configuration.md")

    def _freshen(self, gateway: rattler.Gateway, channels: list[rattler.Channel], subdirs: list[str], *,
                 refresh: bool, max_age: float) -> list[rattler.Channel]:
        """Forget the repodata in memory that is older than ``max_age`` and may have changed.

        A ``file://`` channel is forgotten only when a repodata file's stamp changed; an HTTP one
        always, and rattler's disk cache then asks the server whether it changed. Returns the
        channels that the next query loads (not in memory).
        """
        now = time.monotonic()
        unloaded = []
        for channel in channels:
            url = channel.base_url
            seen = self._checked.get(url)
            if seen is not None and not refresh and now - seen[0] <= max_age:
                continue
            stamp = repodata.file_stamp(url, subdirs)
            if seen is not None and (refresh or stamp is None or stamp != seen[1]):
                gateway.clear_repodata_cache(channel, subdirs)  # type: ignore[arg-type]  # as in solve()
                log.debug("channel %s: repodata checked again", mask(url))
            if seen is None or refresh or stamp is None or stamp != seen[1]:
                unloaded.append(channel)
            self._checked[url] = (now, stamp)
        return unloaded

    async def _probe(self, gateway: rattler.Gateway, channels: list[rattler.Channel], subdirs: list[str]) -> None:
        """Load the index of each channel in ``channels`` at once; one that takes longer than
        ``connect_timeout + fetch_timeout`` ends the solve with ``ChannelTimeoutError``."""
        if not channels:
            return
        probes = {asyncio.ensure_future(gateway.query([c], subdirs, [_PROBE], recursive=False)): c  # type: ignore[arg-type]
                  for c in channels}
        try:
            _done, pending = await asyncio.wait(probes, timeout=self._stall_limit)
            for task in _done:
                task.result()  # its error, if any
        finally:
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
        if pending:
            names = ", ".join(mask(probes[t].base_url) for t in pending)
            for task in pending:
                self._checked.pop(probes[task].base_url, None)
            raise ChannelTimeoutError(
                f"channel {names} did not send its repodata within {self._stall_limit:g}s "
                f"(connect_timeout + fetch_timeout)", hint=self._timeout_hint(names))

    async def install(self, lock: Lock, build_dir: Path, target_prefix: Path, on_line: OnLine,
                      progress: BuildProgress | None = None) -> None:
        on_line(f"installing {len(lock.packages)} packages into {target_prefix} (building in {build_dir})")
        # A lock read from a lockfile may still hold credentials: keep them, install from clean URLs.
        packages = [self._clean_package(p) for p in lock.packages]
        client, _gateway = self._network()
        # What micromamba cached is hardlinked where rattler looks: no second download.
        if shared := await asyncio.to_thread(share, self.settings.paths.pkgs, lock.packages, "rattler"):
            on_line(f"linked {len(shared)} packages from micromamba's cache layout: {', '.join(shared)}")
        # Downloads are watched through the reporter; it costs rattler a Python call per event, so
        # only when something must be fetched or someone shows progress.
        # Only remote packages: a file:// one is copied and extracted without download events.
        fetch = {p.name for p in lock.packages
                 if not p.url.startswith("file:") and not cached(self.settings.paths.pkgs, p)}
        reporter = Reporter(progress, list(lock.packages), fetch) if progress or fetch else None
        try:
            records = [_record(p) for p in packages]
            task = asyncio.ensure_future(rattler.install(
                records,
                target_prefix=build_dir,
                cache_dir=self.settings.paths.pkgs,
                alternative_target_prefix=target_prefix,
                show_progress=False,
                execute_link_scripts=False,
                client=client,
                reporter=reporter,  # type: ignore[arg-type]  # duck-typed: see _watch.Reporter
            ))
            try:
                await self._watch(task, reporter)
            except BaseException:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                # rattler links files in threads that outlive the cancelled call: let them end
                # before the caller removes build_dir.
                await settle(build_dir)
                raise
        except ChannelTimeoutError as exc:
            on_line(f"error: {exc.message}")
            raise
        except Exception as exc:  # rattler raises many unrelated exception types here
            text = mask(str(exc))
            on_line(f"error: {text}")
            raise EngineError(f"install failed: {_summary(text) or type(exc).__name__}") from None
        on_line("\n".join(f"linked {p.dist} ({p.subdir})" for p in lock.packages))

    async def _watch(self, task: asyncio.Future[None], reporter: Reporter | None) -> None:
        """Await ``task``; end it with ChannelTimeoutError when its downloads stall."""
        if reporter is None:
            await task
            return
        limit = self._stall_limit
        while True:
            # Woken by the end of the install, or when the download activity may have gone stale.
            remaining = reporter.last_activity + limit - time.monotonic()
            if remaining <= 0 and reporter.downloading:
                channels = ", ".join(sorted({mask(c) for c in reporter.downloading}))
                raise ChannelTimeoutError(
                    f"channel {channels}: a package download made no progress for {limit:g}s "
                    "(connect_timeout + fetch_timeout)", hint=self._timeout_hint(channels))
            done, _ = await asyncio.wait({task}, timeout=max(remaining, 0.0) or limit)
            if done:
                task.result()
                return

    def _clean_package(self, p: Package) -> Package:
        url, channel = strip_credentials(p.url), strip_credentials(p.channel)
        if url == p.url and channel == p.channel:
            return p
        base = p.channel if channel != p.channel else p.url.rsplit("/", 2)[0] + "/"
        self.credentials.remember(base)
        return dataclasses.replace(p, url=url, channel=channel)


def _origin(p: Package, mirrored: dict[str, str]) -> Package:
    """A record solved from a mirror's local repodata, pointed back at its channel."""
    for local, channel in mirrored.items():
        if p.url.startswith(local):
            return dataclasses.replace(p, url=channel + p.url[len(local):], channel=channel)
    return p


def _generic(text: str) -> rattler.GenericVirtualPackage:
    """``__glibc=2.36=0`` as rattler's GenericVirtualPackage."""
    name, version, build = (text.split("=", 2) + ["", ""])[:3]
    return rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version or "0"),
                                         rattler.BuildString(build or "0"))


@functools.lru_cache(maxsize=16384)
def _record(p: Package) -> rattler.RepoDataRecord:
    """``record_of``, remembered: builds share most packages, and the daemon lives long (~17 us each)."""
    return record_of(p)


def record_of(p: Package) -> rattler.RepoDataRecord:
    """A rattler record from our Package, so a lock installs without touching repodata."""
    import datetime as dt

    record = rattler.PackageRecord(
        name=p.name,
        version=p.version,
        build=rattler.BuildString(p.build),
        build_number=p.build_number,
        subdir=p.subdir,
        noarch=rattler.NoArchType(p.noarch) if p.noarch else None,  # type: ignore[arg-type]  # "python" or "generic"
        depends=list(p.depends),
        constrains=list(p.constrains),
        sha256=bytes.fromhex(p.sha256) if p.sha256 else None,
        md5=bytes.fromhex(p.md5) if p.md5 else None,
        size=p.size,
        license=p.license,
    )
    if p.timestamp is not None:
        record.timestamp = dt.datetime.fromtimestamp(p.timestamp / 1000, tz=dt.UTC)
    return rattler.RepoDataRecord(record, p.file_name, p.url, p.channel)


def _summary(text: str) -> str:
    """rattler's error chain in one line: what failed, then its root cause ("failed to fetch
    x.conda: ... No space left on device (os error 28)"), which the first line alone hides."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines[1:] if line.startswith("Caused by: ")]
    return f"{lines[0]}: {causes[-1]}" if lines and causes else (lines[0] if lines else "")
