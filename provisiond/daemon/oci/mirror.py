"""A registry as a package mirror: packages of mirrored channels come from the registry first.

The ``mirrors`` setting maps a channel to an OCI repository laid out as conda-forge's mirror
(``ghcr.io/channel-mirrors/conda-forge``) and rattler's ``OciMiddleware`` read it:
``<repo>/<subdir>/<name>:<version>-<build>``, one layer per archive with conda's media type.
Before a build installs, every package of a mirrored channel that the cache lacks is fetched by
its digest (``sha256:<the lock's sha256>``, as rattler does when it knows the hash), or through the
tag's manifest when the lock has no sha256; checked; and put in the package cache. Whatever the
mirror lacks or fails to give is left to the engine, which fetches it from the channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisiond.config.settings import Settings
from provisiond.daemon.oci import cache
from provisiond.daemon.oci.auth import Logins, default_auth_files
from provisiond.daemon.oci.client import Registry, session
from provisiond.daemon.oci.push import remove, scratch_dir
from provisiond.domain.errors import ProvisionError
from provisiond.domain.lock import Lock, Package
from provisiond.domain.oci import (
    REPODATA,
    Reference,
    mirror_repository,
    package_media_type,
    parse_reference,
    tag_of,
)
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import strip_credentials

log = logging.getLogger(__name__)

PARALLEL = 4


def mirrors_of(settings: Settings) -> dict[str, Reference]:
    """Channel base URL (with '/') -> the mirror's registry and base repository."""
    out = {}
    for channel, mirror in settings.mirrors:
        base = channel if "://" in channel else settings.channel_alias + channel.strip("/") + "/"
        out[base] = parse_reference(mirror.removeprefix("oci://"))
    return out


def _mirror_for(mirrors: dict[str, Reference], package: Package) -> Reference | None:
    """The repository that mirrors ``package``'s channel (a mirror of a URL prefix: with the rest of
    the channel's path below it, as ``oci://ghcr.io/channel-mirrors`` holds ``conda-forge/...``)."""
    url = strip_credentials(package.url)
    best = max((base for base in mirrors if url.startswith(base)), key=len, default=None)
    if best is None:
        return None
    channel = url[:-len(f"{package.subdir}/{package.file_name}")]
    below = channel[len(best):].strip("/")
    ref = mirrors[best]
    return ref.with_tag(None) if not below else Reference(ref.registry, f"{ref.repository}/{below}")


async def prefetch(settings: Settings, lock: Lock, on_line: Callable[[str], None]) -> dict[str, int]:
    """Put the lock's mirrored packages that the cache lacks into it; the rest is the engine's."""
    mirrors = mirrors_of(settings)
    pkgs = settings.paths.pkgs
    wanted = [(p, m) for p in lock.packages if (m := _mirror_for(mirrors, p)) is not None and not cache.has(pkgs, p)]
    counts = {"mirrored": 0, "fallback": 0}
    if not wanted:
        return counts
    logins = Logins([settings.registry_auth_file] if settings.registry_auth_file else default_auth_files())
    scratch = scratch_dir(pkgs.parent / "cache" / "oci")
    gate = asyncio.Semaphore(PARALLEL)
    try:
        async with session() as s:
            registries: dict[str, Registry] = {}

            def registry_of(ref: Reference) -> Registry:
                if ref.registry not in registries:
                    plain = ref.registry in settings.insecure_registries
                    registries[ref.registry] = Registry(s, ref, logins, plain_http=plain,
                                                        timeout=settings.connect_timeout + settings.fetch_timeout)
                return registries[ref.registry]

            async def one(package: Package, mirror: Reference) -> None:
                async with gate:
                    try:
                        await _fetch(registry_of(mirror), mirror, package, pkgs, scratch / package.file_name)
                    except ProvisionError as exc:
                        counts["fallback"] += 1
                        on_line(f"mirror {mirror}: {package.file_name}: {exc.message}; from the channel instead")
                    else:
                        counts["mirrored"] += 1

            await asyncio.gather(*(one(p, m) for p, m in wanted))
    finally:
        await asyncio.to_thread(remove, scratch)
    on_line(f"mirror: {counts['mirrored']} packages from the registry, {counts['fallback']} left to the channel")
    return counts


async def _fetch(registry: Registry, mirror: Reference, package: Package, pkgs: Path, dest: Path) -> None:
    repository = mirror_repository(mirror.repository, package.subdir, package.name)
    digest = f"sha256:{package.sha256}" if package.sha256 else None
    if digest is None or not await registry.has_blob(repository, digest):
        data, _media, _d = await registry.manifest(repository, tag_of(package.version, package.build))
        layers = json.loads(data).get("layers") or []
        media = package_media_type(package.file_name)
        layer = next((la for la in layers if la.get("mediaType") == media), None)
        if layer is None:
            raise ProvisionError(f"no {media} layer in {repository}")
        digest = str(layer["digest"])
    await registry.fetch_blob(repository, digest, dest)
    await asyncio.to_thread(cache.insert, pkgs, package, dest)


async def sync_repodata(settings: Settings, engine: Any, spec: EnvSpec) -> None:
    """Keep a local copy of each mirrored channel's repodata from its OCI mirror, for the engine.

    A channel's copy is used when the mirror has ``<repo>/<subdir>/repodata.json:latest`` for every
    subdir the solve reads (its layer's digest decides whether to fetch it again); otherwise, or on
    any failure, the channel itself serves the repodata.
    """
    mirrors = mirrors_of(settings)
    subdirs = [engine.platform, "noarch"]
    root = settings.paths.repodata_cache.parent / "oci-repodata"
    logins = Logins([settings.registry_auth_file] if settings.registry_auth_file else default_auth_files())
    async with session() as s:
        for channel in engine.channel_urls(spec):
            base = channel if channel.endswith("/") else channel + "/"
            best = max((m for m in mirrors if base.startswith(m)), key=len, default=None)
            if best is None:
                continue
            mirror = mirrors[best]
            local = root / hashlib.sha256(base.encode()).hexdigest()[:16]
            registry = Registry(s, mirror, logins, plain_http=mirror.registry in settings.insecure_registries,
                                timeout=settings.connect_timeout + settings.fetch_timeout)
            try:
                for subdir in subdirs:
                    await _sync_subdir(registry, mirror, base[len(best):], subdir, local / subdir)
            except ProvisionError as exc:
                engine.repodata_sources.pop(base, None)
                log.info("mirror %s: no repodata for %s (%s): from the channel", mirror, base, exc.message)
                continue
            engine.repodata_sources[base] = local.as_uri() + "/"


async def _sync_subdir(registry: Registry, mirror: Reference, below: str, subdir: str, dest: Path) -> None:
    repository = "/".join(part.strip("/") for part in (mirror.repository, below, subdir, "repodata.json") if part)
    data, _media, _digest = await registry.manifest(repository, "latest")
    layer = next((la for la in json.loads(data).get("layers") or [] if la.get("mediaType") == REPODATA), None)
    if layer is None:
        raise ProvisionError(f"no {REPODATA} layer in {repository}:latest")
    stamp = dest / "repodata.json.digest"
    if stamp.is_file() and stamp.read_text() == layer["digest"] and (dest / "repodata.json").is_file():
        return
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / "repodata.json.part"
    await registry.fetch_blob(repository, layer["digest"], part)
    part.replace(dest / "repodata.json")
    stamp.write_text(layer["digest"])
