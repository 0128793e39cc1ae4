"""``provisionctl push``: an env as an OCI artifact, each package archive a blob named by its sha256.

A blob the repository already has is not sent (``HEAD``); one another repository of the same
registry has is mounted (``--mount-from``); the rest is uploaded from the package cache's archive,
the channel's ``file://`` directory, or the channel itself (checked against the lock's sha256).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from provisiond import __version__
from provisiond.daemon.oci.client import DEFAULT_CHUNK_SIZE, Registry
from provisiond.domain.errors import BadRequestError
from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock, Package
from provisiond.domain.oci import (
    ANNOTATION_ENV_KEY,
    ANNOTATION_NAME,
    ANNOTATION_PLATFORM,
    ANNOTATION_VERSION,
    LOCK_CONFIG,
    MANIFEST,
    TITLE,
    DigestMismatchError,
    Reference,
    RegistryError,
    canonical,
    descriptor,
    digest_of,
    env_manifest,
    package_media_type,
)
from provisiond.domain.urls import mask

log = logging.getLogger(__name__)

PARALLEL = 4  # blobs uploading at once
CHECKS = 16  # existence checks (HEAD) at once


@dataclass
class Counts:
    """What a transfer did with its blobs (the answer of push and pull, and their progress events)."""

    blobs: int = 0
    skipped: int = 0
    mounted: int = 0
    transferred: int = 0
    bytes: int = 0
    total_bytes: int = 0
    done: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"blobs": self.blobs, "skipped": self.skipped, "mounted": self.mounted,
                "transferred": self.transferred, "bytes": self.bytes, "total_bytes": self.total_bytes}


class Archives:
    """Where a package's archive can be read: the package cache, the registry a pulled env came from
    (``origin``: by digest), a ``file://`` channel, or the channel."""

    def __init__(self, pkgs: Path, session: aiohttp.ClientSession, attach: Callable[[str], str],
                 scratch: Path, origin: tuple[Registry, str] | None = None) -> None:
        self.pkgs, self.session, self.attach, self.scratch = pkgs, session, attach, scratch
        self.origin = origin

    async def get(self, package: Package) -> Path:
        cached = self.pkgs / package.file_name
        if cached.is_file():
            return cached
        if self.origin is not None and package.sha256:
            dest = self.scratch / package.file_name
            await self.origin[0].fetch_blob(self.origin[1], f"sha256:{package.sha256}", dest)
            return dest
        parts = urlsplit(package.url)
        if parts.scheme == "file":
            path = Path(unquote(parts.path))
            if path.is_file():
                return path
            raise BadRequestError(f"{package.file_name}: the archive is not in the package cache, and its "
                                  f"channel file {path} is gone", hint="pushing needs each archive once")
        dest = self.scratch / package.file_name
        try:
            async with self.session.get(self.attach(package.url)) as response:
                if response.status != 200:
                    raise RegistryError(f"{mask(package.url)}: {response.status} while fetching the archive to push",
                                        hint="pushing needs each archive once: from the cache or its channel")
                with dest.open("wb") as f:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        f.write(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryError(f"{mask(package.url)}: cannot fetch the archive to push: {exc}") from None
        return dest


async def push_env(registry: Registry, ref: Reference, lock: Lock, name: str, archives: Archives, *,
                   tags: list[str], mount_from: list[str], chunk_size: int = DEFAULT_CHUNK_SIZE,
                   progress: BuildProgress | None = None) -> dict[str, Any]:
    """Push ``lock``'s env to ``ref``'s repository under ``tags``; the manifest's digest and counts."""
    if lock.pip:
        raise BadRequestError(f"{name}: an env with pip packages cannot be pushed yet (its pip wheels "
                              "would still need PyPI on pull)", hint="push envs whose packages are all conda packages")
    repository = ref.repository
    counts = Counts(blobs=len(lock.packages) + 1, total_bytes=sum(p.size or 0 for p in lock.packages))
    emit = progress.emit if progress is not None else (lambda *a, **k: None)
    emit("start", blobs=counts.blobs, total=counts.total_bytes, repository=f"{ref.registry}/{repository}")
    gate, checks = asyncio.Semaphore(PARALLEL), asyncio.Semaphore(CHECKS)

    def moved(n: int) -> None:
        counts.bytes += n
        emit("bytes", bytes=counts.bytes, total=counts.total_bytes, done=counts.done, blobs=counts.blobs)

    async def one(package: Package) -> dict[str, Any]:
        sha = package.sha256
        path = None
        if not sha:  # a lockfile that gave only md5: hash the archive
            async with gate:
                path = await archives.get(package)
                sha = await asyncio.to_thread(_sha256, path)
        digest = f"sha256:{sha}"
        async with checks:
            present = await registry.has_blob(repository, digest)
        async with gate:
            size = package.size
            action = "skipped"
            if not present:
                location = None
                for source in mount_from:
                    location = await registry.mount(repository, digest, source)
                    if location is None:
                        action = "mounted"
                        break
                if action != "mounted":
                    path = path or await archives.get(package)
                    actual = await asyncio.to_thread(_sha256, path)
                    if actual != sha:
                        raise DigestMismatchError(f"{package.file_name}: the archive's sha256 is {actual}, the "
                                                  f"lock says {sha}", hint="the cache or channel copy is not the "
                                                  "locked package; remove it and warm the env again")
                    size = path.stat().st_size
                    await registry.upload(repository, digest, path, size, location=location,
                                          chunk_size=chunk_size, on_bytes=moved)
                    action = "uploaded"
            if size is None:
                path = path or await archives.get(package)
                size = path.stat().st_size
            counts.done += 1
            if action == "skipped":
                counts.skipped += 1
            elif action == "mounted":
                counts.mounted += 1
            else:
                counts.transferred += 1
            emit("blob", digest=digest, file=package.file_name, action=action, done=counts.done,
                 blobs=counts.blobs, bytes=counts.bytes, total=counts.total_bytes)
            return descriptor(package_media_type(package.file_name), digest, size, {TITLE: package.file_name})

    layers = await _gather([one(p) for p in lock.packages])
    config_bytes = lock.without_credentials().to_json().encode()
    config = descriptor(LOCK_CONFIG, digest_of(config_bytes), len(config_bytes))
    if await registry.has_blob(repository, config["digest"]):
        counts.skipped += 1
    else:
        await registry.upload(repository, config["digest"], config_bytes, len(config_bytes), on_bytes=moved)
        counts.transferred += 1
    counts.done += 1
    annotations = {ANNOTATION_ENV_KEY: lock.env_key, ANNOTATION_NAME: name, ANNOTATION_PLATFORM: lock.platform,
                   ANNOTATION_VERSION: __version__}
    manifest = canonical(env_manifest(config, layers, annotations))
    digest = digest_of(manifest)
    for tag in tags or [lock.env_key]:
        await registry.put_manifest(repository, tag, manifest, MANIFEST)
    log.info("pushed %s to %s/%s@%s (%d of %d blobs sent)", name, ref.registry, repository, digest[:19],
             counts.transferred, counts.blobs)
    return {"name": name, "env_key": lock.env_key, "reference": str(ref.with_tag(None, digest)),
            "digest": digest, "tags": tags or [lock.env_key], **counts.to_wire(),
            "requests": registry.stats.requests}


async def _gather(coros: list[Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """All of them, or the first error once the others are cancelled and awaited."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def scratch_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".oci-", dir=root))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else (path.unlink(missing_ok=True)
                                                                   if os.path.lexists(path) else None)
