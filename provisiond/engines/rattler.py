"""py-rattler, in-process: the embedded default engine.

The gateway (repodata) lives as long as the engine, so a re-solve after an edit costs
milliseconds instead of re-reading every channel's repodata.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import rattler
import rattler.exceptions as rx
from rattler.networking import (AddHeadersMiddleware, AuthenticationMiddleware, Client, GCSMiddleware,
                                MirrorMiddleware, OciMiddleware, RetryMiddleware, S3Middleware)

from provisiond.credentials import Credentials
from provisiond.engines.base import OnLine
from provisiond.errors import EngineError, SolveError
from provisiond.events import BuildProgress
from provisiond.lock import Lock, Package
from provisiond.settings import Settings
from provisiond.spec import EnvSpec
from provisiond.urls import mask, strip_credentials

log = logging.getLogger(__name__)


class RattlerEngine:
    name = "rattler"
    builds_in_place = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.platform = str(rattler.Subdir.current())
        self._channel_config = rattler.ChannelConfig(channel_alias=settings.channel_alias)
        self.credentials = Credentials(settings.paths.credentials)
        self._generation = self.credentials.generation
        self._client, self._gateway = self._connect()
        self._virtual = rattler.VirtualPackage.detect()

    def _network(self) -> tuple[Client, rattler.Gateway]:
        """The HTTP client and the gateway that uses it, rebuilt when the credentials changed."""
        if self._generation != self.credentials.generation:
            self._generation = self.credentials.generation
            # A new gateway forgets the repodata it holds in memory: only when credentials change.
            self._client, self._gateway = self._connect()
        return self._client, self._gateway

    def _connect(self) -> tuple[Client, rattler.Gateway]:
        """An HTTP client for the current credentials, and a gateway that uses it.

        rattler only ever sees credential-free URLs, so its repodata cache, package cache and the
        envs' conda-meta hold no secret: the first two middlewares put the token back into the
        path and the password into a header, in memory, on the way out. The rest is rattler's
        default stack (``Client.default_client``).
        """
        middlewares: list[Any] = [AddHeadersMiddleware(self.credentials.headers)]
        if mirrors := self.credentials.mirrors():
            middlewares.append(MirrorMiddleware(mirrors))
        middlewares += [RetryMiddleware(), AuthenticationMiddleware(), OciMiddleware(), GCSMiddleware(),
                        S3Middleware()]
        client = Client(middlewares)
        return client, rattler.Gateway(cache_dir=self.settings.paths.repodata_cache, client=client)

    def version(self) -> str:
        from importlib.metadata import version

        return f"py-rattler {version('py-rattler')}"

    def virtual_packages(self) -> list[str]:
        return sorted(str(v.into_generic()) for v in self._virtual)

    def channel(self, name: str) -> rattler.Channel:
        return rattler.Channel(name, self._channel_config)

    def channels_of(self, spec: EnvSpec) -> list[rattler.Channel]:
        """The spec's channels in priority order, then channels named only in ``channel::pkg``.

        Without credentials: those are kept by ``self.credentials`` for the downloads.
        """
        channels = [self._clean(self.channel(c)) for c in spec.channels]
        seen = {c.base_url for c in channels}
        for dep in spec.dependencies:
            pinned = rattler.MatchSpec(dep, strict=False).channel
            if pinned is not None:
                pinned = self._clean(pinned)
                if pinned.base_url not in seen:
                    channels.append(pinned)
                    seen.add(pinned.base_url)
        return channels

    def _clean(self, channel: rattler.Channel) -> rattler.Channel:
        clean = self.credentials.remember(channel.base_url)
        return channel if clean == channel.base_url else self.channel(clean)

    async def solve(self, spec: EnvSpec, *, refresh: bool = False) -> Lock:
        channels = self.channels_of(spec)
        _client, gateway = self._network()
        if not channels:
            raise SolveError(f"{spec.source or 'spec'}: no channels to solve from",
                             hint="add a 'channels:' list to the environment file")
        subdirs = [self.platform, "noarch"]
        if refresh:
            for channel in channels:
                gateway.clear_repodata_cache(channel, subdirs)
        priority = (rattler.ChannelPriority.Strict if spec.channel_priority == "strict"
                    else rattler.ChannelPriority.Disabled)
        try:
            records = await rattler.solve(
                sources=channels,
                # Parse leniently, like the spec validator: solve() parses strings strictly and
                # rejects the common `name=version=build` form of exports.
                specs=[rattler.MatchSpec(strip_credentials(d), strict=False) for d in spec.dependencies],
                gateway=gateway,
                platforms=subdirs,
                virtual_packages=self._virtual,
                channel_priority=priority,
                timestamp_policy="allow-missing",
            ) if spec.dependencies else []
        except rx.SolverError as exc:
            raise SolveError(f"{spec.source or 'spec'}: cannot be solved:\n{exc}",
                             hint="relax a version pin or add the channel that has the package") from None
        except (rx.GatewayError, rx.FetchRepoDataError, rx.InvalidChannelError, rx.IoError) as exc:
            raise EngineError(f"cannot read channel repodata: {mask(str(exc))}",
                              hint="check the channel URLs and your network") from None
        return Lock(
            platform=self.platform,
            packages=tuple(package_of(r) for r in records),
            channels=tuple(c.base_url for c in channels),
            engine=self.name,
        )

    async def install(self, lock: Lock, build_dir: Path, target_prefix: Path, on_line: OnLine,
                      progress: BuildProgress | None = None) -> None:
        on_line(f"installing {len(lock.packages)} packages into {target_prefix} (building in {build_dir})")
        # A lock read from a lockfile may still hold credentials: keep them, install from clean URLs.
        packages = [self._clean_package(p) for p in lock.packages]
        client, _gateway = self._network()
        try:
            records = [_record(p) for p in packages]
            await rattler.install(
                records,
                target_prefix=build_dir,
                cache_dir=self.settings.paths.pkgs,
                alternative_target_prefix=target_prefix,
                show_progress=False,
                execute_link_scripts=False,
                client=client,
                reporter=_Reporter(progress, list(lock.packages)) if progress else None,
            )
        except Exception as exc:  # rattler raises many unrelated exception types here
            text = mask(str(exc))
            on_line(f"error: {text}")
            raise EngineError(f"install failed: {_summary(text) or type(exc).__name__}") from None
        on_line("\n".join(f"linked {p.dist} ({p.subdir})" for p in lock.packages))

    def _clean_package(self, p: Package) -> Package:
        url, channel = strip_credentials(p.url), strip_credentials(p.channel)
        if url == p.url and channel == p.channel:
            return p
        base = p.channel if channel != p.channel else p.url.rsplit("/", 2)[0] + "/"
        self.credentials.remember(base)
        return dataclasses.replace(p, url=url, channel=channel)


class _Reporter:
    """rattler's InstallerReporter protocol → our phase events (called from rattler's threads).

    Fetching a package into the cache (download or copy from a file:// channel, then extract)
    is the ``download`` phase; its bytes are the archive sizes from the lock, plus the bytes of
    downloads in flight when rattler reports them (http channels).
    """

    def __init__(self, progress: BuildProgress, packages: list[Package]) -> None:
        self.progress = progress
        self.sizes = {p.name: p.size or 0 for p in packages}
        self.total_bytes = sum(self.sizes.values())
        self.names: dict[int, str] = {}
        self.fetched = 0
        self.fetched_bytes = 0
        self.in_flight: dict[int, int] = {}
        self.linked = 0
        self.next_download = 0

    def on_populate_cache_start(self, operation: int, package_name: str) -> int:
        self.names[operation] = package_name
        return operation

    def on_populate_cache_complete(self, cache_entry: int) -> None:
        self.fetched += 1
        self.fetched_bytes += self.sizes.get(self.names.get(cache_entry, ""), 0)
        self._report()

    def on_download_start(self, cache_entry: int) -> int:
        self.next_download += 1
        return self.next_download

    def on_download_progress(self, download_idx: int, progress: int, total: int | None) -> None:
        self.in_flight[download_idx] = progress
        self._report()

    def on_download_completed(self, download_idx: int) -> None:
        self.in_flight.pop(download_idx, None)

    def _report(self) -> None:
        done_bytes = min(self.fetched_bytes + sum(self.in_flight.values()), self.total_bytes)
        self.progress.download(done_bytes, self.total_bytes, self.fetched, len(self.sizes))

    def on_link_start(self, operation: int, package_name: str) -> int:
        return operation

    def on_link_complete(self, index: int) -> None:
        self.linked += 1
        self.progress.emit("link", done=self.linked, total=len(self.sizes))


def package_of(record: rattler.RepoDataRecord) -> Package:
    """Our Package from a rattler record (we never hash rattler's own serialization)."""
    noarch = record.noarch
    noarch_name = "python" if noarch.python else "generic" if noarch.generic else None
    return Package(
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        build_number=record.build_number,
        subdir=record.subdir,
        channel=record.channel or "",
        url=record.url,
        file_name=record.file_name,
        sha256=record.sha256.hex() if record.sha256 else None,
        md5=record.md5.hex() if record.md5 else None,
        size=record.size,
        depends=tuple(record.depends),
        constrains=tuple(record.constrains),
        noarch=noarch_name,
        timestamp=int(record.timestamp.timestamp() * 1000) if record.timestamp else None,
        license=record.license,
    )


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
        noarch=rattler.NoArchType(p.noarch) if p.noarch else None,
        depends=list(p.depends),
        constrains=list(p.constrains),
        sha256=bytes.fromhex(p.sha256) if p.sha256 else None,
        md5=bytes.fromhex(p.md5) if p.md5 else None,
        size=p.size,
        license=p.license,
    )
    if p.timestamp is not None:
        record.timestamp = dt.datetime.fromtimestamp(p.timestamp / 1000, tz=dt.timezone.utc)
    return rattler.RepoDataRecord(record, p.file_name, p.url, p.channel)


def _summary(text: str) -> str:
    """rattler's error chain in one line: what failed, then its root cause ("failed to fetch
    x.conda: ... No space left on device (os error 28)"), which the first line alone hides."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines[1:] if line.startswith("Caused by: ")]
    return f"{lines[0]}: {causes[-1]}" if lines and causes else (lines[0] if lines else "")
