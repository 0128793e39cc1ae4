"""``provisionctl image``: a runnable OCI image, written straight to a registry (no Docker daemon).

The image is the base image's layers, then two of ours:

1. the env at its store path: what ``provisionctl bundle`` writes (prefix, lock, activation),
   laid out under ``PROVISIOND_HOME`` so conda's baked-in prefixes hold;
2. ``<home>/bin/cold-start``, the POSIX ``sh`` entrypoint (docs/containers.md);

and a config whose ``Entrypoint`` is ``[<home>/bin/cold-start, NAME, --]``, so
``docker run IMAGE python train.py`` runs ``python train.py`` in the activated env. The base's
layers are mounted from its repository when it lives on the same registry, else copied blob by blob.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from provisiond.config.settings import Paths
from provisiond.daemon.oci.client import Registry
from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock
from provisiond.domain.oci import (
    ANNOTATION_ENV_KEY,
    ANNOTATION_NAME,
    ANNOTATION_VERSION,
    DOCKER_LIST,
    IMAGE_CONFIG,
    INDEX,
    LAYER_GZIP,
    MANIFEST,
    ArtifactError,
    Reference,
    canonical,
    descriptor,
    digest_of,
    image_platform,
)
from provisiond.store.bundle import bundle


class _Hashing:
    """A write-only file that hashes (and counts) what passes through it on its way to ``inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.inner.flush()


def write_layers(paths: Paths, name: str, scratch: Path) -> list[tuple[Path, str, str, int]]:
    """The env layer and the cold-start layer: [(file, digest, diff_id, size)] (in a thread)."""
    source = scratch / "bundle.tar"
    bundle(paths, [name], source)
    home = PurePosixPath(str(paths.home).lstrip("/"))
    out = []
    with tarfile.open(source) as tar:
        members = tar.getmembers()
        for part, keep in (("env", lambda m: not m.name.startswith("bin")),
                           ("cold-start", lambda m: m.name.startswith("bin"))):
            path = scratch / f"{part}.tar.gz"
            with path.open("wb") as f:
                outer = _Hashing(f)
                with gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=1, mtime=0) as gz:
                    inner = _Hashing(gz)
                    with tarfile.open(fileobj=inner, mode="w", format=tarfile.PAX_FORMAT) as layer:  # type: ignore[call-overload]
                        for parent in reversed(home.parents[:-1]):
                            layer.addfile(_dir(str(parent)))
                        layer.addfile(_dir(str(home)))
                        for member in members:
                            if not keep(member):
                                continue
                            entry = copy.copy(member)
                            entry.name = f"{home}/{member.name}"
                            # Reproducible: the same env gives the same layer, whenever its files were written.
                            entry.mtime, entry.uid, entry.gid, entry.uname, entry.gname = 0, 0, 0, "", ""
                            entry.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in _OWN}
                            layer.addfile(entry, tar.extractfile(member) if member.isfile() else None)
            out.append((path, "sha256:" + outer.sha.hexdigest(), "sha256:" + inner.sha.hexdigest(), outer.size))
    return out


_OWN = ("mtime", "atime", "ctime", "uid", "gid", "uname", "gname")  # what the disk says, not the env


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    return info


async def base_image(registry: Registry, ref: Reference, platform: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of the base, the entry for ``platform`` picked from an index."""
    data, media, _digest = await registry.manifest(ref.repository, ref.reference)
    manifest = json.loads(data)
    if media in (INDEX, DOCKER_LIST) or "manifests" in manifest:
        os_name, arch = image_platform(platform)
        entry = next((m for m in manifest.get("manifests", [])
                      if (m.get("platform") or {}).get("os") == os_name
                      and (m.get("platform") or {}).get("architecture") == arch), None)
        if entry is None:
            raise ArtifactError(f"{ref}: no {os_name}/{arch} image in its index")
        data, media, _digest = await registry.manifest(ref.repository, entry["digest"])
        manifest = json.loads(data)
    if not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("layers"), list):
        raise ArtifactError(f"{ref}: not an image manifest")
    config = json.loads(await registry.blob_bytes(ref.repository, manifest["config"]["digest"]))
    return manifest, config


async def build_image(paths: Paths, name: str, lock: Lock, base: Registry, base_ref: Reference, target: Registry,
                      ref: Reference, scratch: Path, progress: BuildProgress | None) -> dict[str, Any]:
    emit = progress.emit if progress is not None else (lambda *a, **k: None)
    manifest, config = await base_image(base, base_ref, lock.platform)
    layers = list(manifest["layers"])
    emit("start", blobs=len(layers) + 3, base=str(base_ref))
    repo = ref.repository
    copied = mounted = skipped = 0
    for layer in layers:  # the base's layers, into the target repository
        digest = layer["digest"]
        if await target.has_blob(repo, digest):
            skipped += 1
            continue
        location = None
        if base.endpoint == target.endpoint:
            location = await target.mount(repo, digest, base_ref.repository)
            if location is None:
                mounted += 1
                continue
        blob = scratch / digest.replace(":", "-")
        await base.fetch_blob(base_ref.repository, digest, blob)
        await target.upload(repo, digest, blob, blob.stat().st_size, location=location)
        blob.unlink()
        copied += 1
    emit("layer", layer="env")
    ours = await asyncio.to_thread(write_layers, paths, name, scratch)
    home = str(paths.home)
    for path, digest, _diff_id, size in ours:
        if not await target.has_blob(repo, digest):
            await target.upload(repo, digest, path, size)
        layers.append(descriptor(LAYER_GZIP, digest, size))
    config = copy.deepcopy(config)
    os_name, arch = image_platform(lock.platform)
    config.setdefault("os", os_name)
    config.setdefault("architecture", arch)
    inner = config.setdefault("config", {}) or {}
    config["config"] = inner
    inner["Entrypoint"] = [f"{home}/bin/cold-start", name, "--"]
    inner["Labels"] = {**(inner.get("Labels") or {}), ANNOTATION_ENV_KEY: lock.env_key, ANNOTATION_NAME: name}
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [d for _p, _d, d, _s in ours]
    config["history"] = list(config.get("history") or []) + [
        {"created_by": f"provisionctl image: env {name} ({lock.env_key[:16]}) at {home}"},
        {"created_by": "provisionctl image: cold-start entrypoint"}]
    config_bytes = canonical(config)
    config_digest = digest_of(config_bytes)
    if not await target.has_blob(repo, config_digest):
        await target.upload(repo, config_digest, config_bytes, len(config_bytes))
    image = {"schemaVersion": 2, "mediaType": MANIFEST,
             "config": descriptor(IMAGE_CONFIG, config_digest, len(config_bytes)), "layers": layers,
             "annotations": {ANNOTATION_ENV_KEY: lock.env_key, ANNOTATION_NAME: name,
                             ANNOTATION_VERSION: _version()}}
    data = canonical(image)
    digest = await target.put_manifest(repo, ref.tag or "latest", data, MANIFEST)
    return {"name": name, "env_key": lock.env_key, "reference": str(ref.with_tag(ref.tag or "latest")),
            "digest": digest, "base": str(base_ref), "entrypoint": inner["Entrypoint"],
            "layers": len(layers), "base_layers": {"skipped": skipped, "mounted": mounted, "copied": copied},
            "env_layer_bytes": ours[0][3]}


def _version() -> str:
    from provisiond import __version__

    return __version__
