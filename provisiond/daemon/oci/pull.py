"""``provisionctl pull``: an env artifact's Lock and its missing package blobs, every digest checked.

Blobs are streamed into a scratch directory beside the package cache and hashed on the way; each
one that matches is extracted into the cache (``cache.py``) while the others download. A blob that
does not match ends the pull with an error before anything is built or named. The build that
follows finds every package cached and needs no channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from provisiond.daemon.oci import cache
from provisiond.daemon.oci.client import Registry
from provisiond.daemon.oci.push import Counts, _gather
from provisiond.domain.errors import BadRequestError, ProvisionError
from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock, Package
from provisiond.domain.oci import (
    ANNOTATION_ENV_KEY,
    ANNOTATION_NAME,
    INDEX,
    TITLE,
    ArtifactError,
    Reference,
    check_env_manifest,
)

log = logging.getLogger(__name__)

PARALLEL = 4


async def read_env(registry: Registry, ref: Reference) -> tuple[Lock, dict[str, Any], str]:
    """(lock, manifest, manifest digest) of an env artifact, its config checked against its digest."""
    data, media, digest = await registry.manifest(ref.repository, ref.reference)
    try:
        manifest = json.loads(data)
    except ValueError:
        raise ArtifactError(f"{ref}: the manifest is not JSON") from None
    if media == INDEX or (isinstance(manifest, dict) and "manifests" in manifest):
        raise ArtifactError(f"{ref}: an image index, not a provisiond env",
                            hint="pull an env pushed by provisionctl push")
    check_env_manifest(manifest, str(ref))
    config = await registry.blob_bytes(ref.repository, manifest["config"]["digest"])
    try:
        lock = Lock.from_json(config.decode("utf-8"))
    except (ProvisionError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{ref}: its lock cannot be read: {getattr(exc, 'message', exc)}") from None
    annotated = (manifest.get("annotations") or {}).get(ANNOTATION_ENV_KEY)
    if annotated is not None and annotated != lock.env_key:
        raise ArtifactError(f"{ref}: its annotation says env {annotated}, its lock is env {lock.env_key}",
                            hint="the artifact was altered after it was pushed")
    return lock, manifest, digest


def default_name(manifest: dict[str, Any], ref: Reference) -> str:
    return str((manifest.get("annotations") or {}).get(ANNOTATION_NAME) or ref.repository.rsplit("/", 1)[-1])


async def fetch_packages(registry: Registry, ref: Reference, lock: Lock, manifest: dict[str, Any], pkgs: Path,
                         scratch: Path, progress: BuildProgress | None = None) -> Counts:
    """Every package of ``lock`` not in the cache: fetched, checked, then extracted into ``pkgs``."""
    layers = {layer["digest"]: layer for layer in manifest["layers"]}
    titles = {(layer.get("annotations") or {}).get(TITLE): layer for layer in manifest["layers"]}
    missing = [p for p in lock.packages if not cache.has(pkgs, p)]
    wanted: list[tuple[Package, dict[str, Any]]] = []
    for package in missing:
        layer = layers.get(f"sha256:{package.sha256}") if package.sha256 else titles.get(package.file_name)
        if layer is None:
            raise ArtifactError(f"{ref}: no blob for {package.file_name}", hint="push the env again")
        wanted.append((package, layer))
    counts = Counts(blobs=len(lock.packages), skipped=len(lock.packages) - len(missing),
                    total_bytes=sum(int(layer["size"]) for _p, layer in wanted))
    emit = progress.emit if progress is not None else (lambda *a, **k: None)
    emit("start", blobs=counts.blobs, skipped=counts.skipped, total=counts.total_bytes)
    gate = asyncio.Semaphore(PARALLEL)

    def moved(n: int) -> None:
        counts.bytes += n
        emit("bytes", bytes=counts.bytes, total=counts.total_bytes, done=counts.done, blobs=counts.blobs)

    async def one(package: Package, layer: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            archive = scratch / package.file_name
            await registry.fetch_blob(ref.repository, layer["digest"], archive, on_bytes=moved)
            # Checked: into the cache at once, while the other blobs download (an archive in the
            # cache is no env: nothing is built or named unless every blob matches).
            await asyncio.to_thread(cache.insert, pkgs, package, archive)
            archive.unlink()
            counts.transferred += 1
            counts.done += 1
            emit("blob", digest=layer["digest"], file=package.file_name, action="downloaded", done=counts.done,
                 blobs=counts.blobs, bytes=counts.bytes, total=counts.total_bytes)
            return layer

    await _gather([one(p, layer) for p, layer in wanted])
    if package_sha := [p for p, _l in wanted if p.sha256 is None]:
        log.info("%d packages of %s have no sha256 in the lock: checked by the blob digest only", len(package_sha), ref)
    return counts


def check_platform(lock: Lock, platform: str, ref: Reference) -> None:
    if lock.platform not in (platform, "noarch"):
        raise BadRequestError(f"{ref}: an env for {lock.platform}; this machine is {platform}",
                              hint="pull it on a machine of that platform, or push one built here")
