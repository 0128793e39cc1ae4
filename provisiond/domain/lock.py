"""The resolved Lock, its canonical JSON, and env_key (pure: no I/O, no rattler)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NewType

from provisiond.domain.errors import ProvisionError
from provisiond.domain.urls import canonical_url, strip_credentials

EnvKey = NewType("EnvKey", str)

LOCK_VERSION = 1
# 2: a package is its canonical URL only (urls.canonical_url): hashes are checked at install, they are
# not the identity, so md5-only, sha256-only and both give one key. Scheme 1 hashed (url, sha256, md5):
# envs built under it are rebuilt once (from the package cache) on their next warm (docs/store.md).
ENV_KEY_SCHEME = 2


class LockFormatError(ProvisionError, code="invalid-lock", http_status=400, exit_code=65):
    """A lock file that is not one of ours, or of a version we do not read."""


@dataclass(frozen=True, slots=True, order=True)
class Package:
    """One resolved conda package: enough to install it without looking at repodata again."""

    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    channel: str
    url: str
    file_name: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    noarch: str | None = None
    timestamp: int | None = None
    license: str | None = None

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Package:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("depends", "constrains"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


@dataclass(frozen=True, slots=True, order=True)
class PipPackage:
    """One pinned pip requirement: uv installs exactly this artifact after the conda packages."""

    name: str
    version: str  # "" for a local directory: its version is known only once it is built
    url: str  # wheel, sdist or archive URL; ``git+URL@commit``; or the file:// URL of a local directory
    sha256: str | None = None  # of the artifact at ``url``; None for VCS checkouts and local directories
    editable: str | None = None  # absolute path of a ``-e`` project: it makes the env project-specific
    # A local project directory's content digest (daemon/trust.py: project_content): editing its code
    # makes another env. None for everything else.
    content: str | None = None

    @property
    def identity(self) -> str:
        """What names the installed content in env_key: the hash, else the editable path, else the URL
        (and a local project's content digest)."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        where = f"-e {self.editable}" if self.editable else self.url
        return f"{where} content:{self.content}" if self.content else where

    @property
    def requirement(self) -> str:
        """The requirements-file line that installs exactly this (uv checks the hash)."""
        if self.editable:
            return f"-e {self.url}"
        return f"{self.name} @ {self.url}" + (f" --hash=sha256:{self.sha256}" if self.sha256 else "")

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PipPackage:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Lock:
    """What a spec resolved to for one platform. Records are kept sorted by name."""

    platform: str
    packages: tuple[Package, ...]
    channels: tuple[str, ...] = ()
    engine: str = ""
    # Not part of env_key: provenance only.
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Installed by uv after the conda packages (pip.py); part of env_key when present.
    pip: tuple[PipPackage, ...] = ()
    # Index options of the pip section (--index-url, --find-links, ...): build dependencies of
    # sdists and editables come from there at install time. Not part of env_key.
    pip_options: tuple[str, ...] = ()
    # Computed once in __post_init__ (a Lock is immutable; the key is asked for many times per warm).
    _env_key: str = field(default="", init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: (p.name, p.url))))
        object.__setattr__(self, "pip", tuple(sorted(self.pip)))
        object.__setattr__(self, "pip_options", tuple(self.pip_options))
        payload: dict[str, Any] = {
            "scheme": ENV_KEY_SCHEME,
            "platform": self.platform,
            # The artifacts, whatever the spelling of their URLs: without credentials (a rotated
            # token is the same env, a bundle keeps its key), scheme, host case, `//` or %-escapes.
            "packages": sorted({canonical_url(p.url) for p in self.packages}),
        }
        if self.pip:  # only then: keys of conda-only envs stay what they always were
            payload["pip"] = [[p.name, p.version, strip_credentials(p.identity)] for p in self.pip]
        object.__setattr__(self, "_env_key", hashlib.sha256(_canonical(payload).encode()).hexdigest())

    @property
    def env_key(self) -> EnvKey:
        """sha256 of our own identity payload: platform + the canonical URL of every record (+ pip pins)."""
        return EnvKey(self._env_key)

    def without_credentials(self) -> Lock:
        """This lock with tokens and passwords removed from its channel and package URLs (same env_key).

        What the store keeps: the engine finds the credentials again in ``credentials.py``'s file.
        pip URLs are left as they are (uv needs them to install; see docs/store.md).
        """
        packages = tuple(replace(p, url=strip_credentials(p.url), channel=strip_credentials(p.channel))
                         for p in self.packages)
        channels = tuple(strip_credentials(c) for c in self.channels)
        if packages == self.packages and channels == self.channels:
            return self
        return replace(self, packages=packages, channels=channels)

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": LOCK_VERSION,
            "platform": self.platform,
            "channels": list(self.channels),
            "engine": self.engine,
            "env_key": self.env_key,
            "packages": [_package_wire(p) for p in self.packages],
            "meta": self.meta,
            "pip": [{k: v for k, v in asdict(p).items() if v is not None} for p in self.pip],
            "pip_options": list(self.pip_options),
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so it is byte-identical everywhere."""
        return _canonical(self.to_wire())

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Lock:
        if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
            raise LockFormatError(
                f"lock version {data.get('version') if isinstance(data, dict) else '?'} is not supported",
                hint=f"this provisiond reads lock version {LOCK_VERSION}",
            )
        try:
            return cls(
                platform=data["platform"],
                packages=tuple(Package.from_wire(p) for p in data["packages"]),
                channels=tuple(data.get("channels", ())),
                engine=data.get("engine", ""),
                meta=dict(data.get("meta") or {}),
                pip=tuple(PipPackage.from_wire(p) for p in data.get("pip") or ()),
                pip_options=tuple(data.get("pip_options") or ()),
            )
        except (KeyError, TypeError) as exc:
            raise LockFormatError(f"malformed lock: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> Lock:
        try:
            return cls.from_wire(json.loads(text))
        except json.JSONDecodeError as exc:
            raise LockFormatError(f"lock is not JSON: {exc}") from None


_PACKAGE_FIELDS = tuple(f.name for f in fields(Package))


def _package_wire(p: Package) -> dict[str, Any]:
    # Plain getattr, not dataclasses.asdict: asdict deep-copies and cost ~5 ms per 50-package lock.
    data = {name: getattr(p, name) for name in _PACKAGE_FIELDS}
    data["depends"], data["constrains"] = list(p.depends), list(p.constrains)
    return {k: v for k, v in data.items() if v not in (None, [])}


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
