"""OCI registries, the pure part: references, media types, and the manifests we write (no I/O).

An env artifact is one OCI image manifest (docs/registry.md):

- ``config``: the canonical Lock JSON (media type ``application/vnd.provisiond.lock.v1+json``),
  so a pull needs nothing else;
- ``layers``: one blob per package archive, its digest the archive's sha256 and its media type
  conda's (``application/vnd.conda.package.v2`` for ``.conda``, ``v1`` for ``.tar.bz2``), so a
  registry that mirrors a channel in conda-forge's layout stores each archive once for both;
- ``annotations``: env_key, name, platform and provisiond's version.

The channel-mirror layout (conda-forge's ``ghcr.io/channel-mirrors``, rattler's OciMiddleware):
repository ``<mirror>/<subdir>/<name>`` (a name starting with ``_`` gets ``zzz`` in front), tag
``<version>-<build>`` with ``+ ! =`` written ``__p__ __e__ __eq__``; repodata at
``<mirror>/<subdir>/repodata.json:latest``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from provisiond.domain.errors import ProvisionError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ENV_ARTIFACT = "application/vnd.provisiond.env.v1"
LOCK_CONFIG = "application/vnd.provisiond.lock.v1+json"
CONDA_V1 = "application/vnd.conda.package.v1"  # .tar.bz2
CONDA_V2 = "application/vnd.conda.package.v2"  # .conda
REPODATA = "application/vnd.conda.repodata.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

ANNOTATION_ENV_KEY = "io.provisiond.env_key"
ANNOTATION_NAME = "io.provisiond.name"
ANNOTATION_PLATFORM = "io.provisiond.platform"
ANNOTATION_VERSION = "io.provisiond.version"
TITLE = "org.opencontainers.image.title"

DOCKER_HUB = "docker.io"


class RegistryError(ProvisionError, code="registry-error", http_status=424, exit_code=os.EX_UNAVAILABLE):
    """A registry answered with an error, or not at all."""


class RegistryAuthError(ProvisionError, code="registry-auth", http_status=424, exit_code=os.EX_NOPERM):
    """A registry refused our credentials (or asked for some we do not have)."""


class DigestMismatchError(ProvisionError, code="digest-mismatch", http_status=424, exit_code=os.EX_DATAERR):
    """A blob or manifest whose bytes do not hash to the digest that names it."""


class ArtifactError(ProvisionError, code="not-an-env", http_status=422, exit_code=os.EX_DATAERR):
    """A manifest that is not a provisiond env (or not one this version reads)."""


class TransferNotFoundError(ProvisionError, code="transfer-not-found", http_status=404, exit_code=os.EX_NOINPUT):
    """A push, pull or image operation this daemon does not know."""


class BadReferenceError(ProvisionError, code="bad-reference", http_status=400, exit_code=os.EX_USAGE):
    """A registry reference we cannot read."""


_REPO = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """``HOST[:PORT]/REPO[:TAG|@DIGEST]``, as docker reads it."""

    registry: str  # host[:port], as written (docker.io for Docker Hub)
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if there is one, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    @property
    def host(self) -> str:
        return self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry

    @property
    def endpoint(self) -> str:
        """The host:port the API lives on (Docker Hub's API is not at docker.io)."""
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    def with_tag(self, tag: str | None, digest: str | None = None) -> Reference:
        return Reference(self.registry, self.repository, tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Docker's reading: the first part is a registry if it has a ``.`` or ``:`` or is ``localhost``."""
    raw = text.strip()
    for scheme in ("oci://", "docker://"):
        raw = raw.removeprefix(scheme)
    digest = None
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise BadReferenceError(f"{text!r}: {digest!r} is not a sha256 digest", hint="sha256:<64 hex digits>")
    first, _, rest = raw.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, raw
        if "/" not in path:
            path = f"library/{path}"
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise BadReferenceError(f"{text!r}: {tag!r} is not a valid tag",
                                  hint="a tag has up to 128 letters, digits, '_', '.', '-' (not first)")
    if not path or not _REPO.fullmatch(path):
        raise BadReferenceError(f"{text!r} is not a registry reference",
                              hint="write HOST[:PORT]/REPO[:TAG|@DIGEST], e.g. localhost:5000/team/envs:v1")
    return Reference(registry.lower(), path, tag, digest)


def is_loopback(host: str) -> bool:
    """localhost and 127.0.0.0/8 (and ::1): reached over plain HTTP, as docker and skopeo do."""
    name = host.strip("[]").rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    """The bytes we push for a JSON document (manifest, config): stable, so its digest is too."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def package_media_type(file_name: str) -> str:
    return CONDA_V1 if file_name.endswith(".tar.bz2") else CONDA_V2


def descriptor(media_type: str, digest: str, size: int, annotations: dict[str, str] | None = None
               ) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        out["annotations"] = annotations
    return out


def env_manifest(config: dict[str, Any], layers: list[dict[str, Any]], annotations: dict[str, str]
                 ) -> dict[str, Any]:
    """An env artifact: the lock as config, one layer per package archive."""
    return {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ENV_ARTIFACT, "config": config,
            "layers": layers, "annotations": annotations}


def check_env_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """``manifest`` if it is a provisiond env artifact, else ArtifactError naming what it is."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) \
            or not isinstance(manifest.get("layers"), list):
        raise ArtifactError(f"{where}: not an OCI image manifest")
    media = manifest["config"].get("mediaType")
    if media != LOCK_CONFIG:
        raise ArtifactError(f"{where}: not a provisiond env (its config is {media!r})",
                            hint="push one with: provisionctl push NAME REF")
    for layer in manifest["layers"]:
        if not isinstance(layer, dict) or not _DIGEST.fullmatch(str(layer.get("digest", ""))) \
                or not isinstance(layer.get("size"), int):
            raise ArtifactError(f"{where}: a layer without a sha256 digest or a size")
    return manifest


def tag_of(version: str, build: str) -> str:
    """conda-forge's mirror tag for a package (rattler's ``version_build_tag``)."""
    return f"{version}-{build}".replace("+", "__p__").replace("!", "__e__").replace("=", "__eq__")


def mirror_repository(base: str, subdir: str, name: str) -> str:
    """The repository of package ``name`` in a channel mirror rooted at ``base`` (a repository path)."""
    return f"{base.strip('/')}/{subdir}/{'zzz' + name if name.startswith('_') else name}"


def image_platform(conda_platform: str) -> tuple[str, str]:
    """(os, architecture) of an OCI image for a conda subdir: linux-64 -> (linux, amd64)."""
    os_name, _, arch = conda_platform.partition("-")
    arch = {"64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x", "32": "386",
            "armv7l": "arm", "arm64": "arm64"}.get(arch, arch)
    return {"osx": "darwin", "win": "windows"}.get(os_name, os_name), arch
