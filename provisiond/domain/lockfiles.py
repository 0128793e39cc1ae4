"""Read lockfiles into our Lock, without solving: @EXPLICIT files, conda-lock.yml v1, pixi.lock.

The same resolved packages give the same env_key whatever the input format, because env_key
hashes (url, sha256) pairs of our own Lock, never a file's bytes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from provisiond.domain.errors import SpecError
from provisiond.domain.lock import Lock, Package, PipPackage

if TYPE_CHECKING:
    import rattler

SUFFIXES = (".conda", ".tar.bz2")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def kind_of(path: Path) -> str:
    """``spec``, ``explicit``, ``conda-lock`` or ``pixi``, by name first (like micromamba), then content."""
    name = path.name
    if not path.is_file():
        return "spec"  # load_spec reports a missing file, a directory or a FIFO
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(8192)
    except OSError:
        return "spec"
    if any(line.strip() == "@EXPLICIT" for line in head.splitlines()):
        return "explicit"
    version = re.search(r"^version:\s*(\d+)\s*$", head, re.M)
    if name == "pixi.lock" or (version and int(version.group(1)) >= 4 and "environments:" in head):
        return "pixi"
    if name.endswith(("-lock.yml", "-lock.yaml")) or (version and "package:" in head and "metadata:" in head):
        return "conda-lock"
    return "spec"


def load_lockfile(path: Path, platform: str) -> Lock:
    """A Lock for ``platform`` from any supported lockfile."""
    kind = kind_of(path)
    if path.is_file() and path.stat().st_size > 256 << 20:
        raise SpecError(f"{path}: larger than 256 MiB; not a lockfile")
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from None
    if kind == "explicit":
        return parse_explicit(text, str(path), platform)
    if kind == "conda-lock":
        return parse_conda_lock(text, str(path), platform)
    if kind == "pixi":
        return parse_pixi(path, platform)
    raise SpecError(f"{path}: not a lockfile", hint="lockfiles: @EXPLICIT files, conda-lock.yml (v1), pixi.lock")


def package_from_url(url: str, *, sha256: str | None = None, md5: str | None = None,
                     depends: tuple[str, ...] = (), **extra: Any) -> Package:
    """A Package from its URL: channel/subdir/name-version-build.ext (conda's own naming rule)."""
    parts = urlsplit(url)
    segments = parts.path.rstrip("/").split("/")
    file_name = unquote(segments[-1])
    stem = next((file_name[: -len(s)] for s in SUFFIXES if file_name.endswith(s)), None)
    if stem is None or stem.count("-") < 2 or len(segments) < 3:
        raise ValueError(f"not a conda package URL: {url}")
    name, version, build = stem.rsplit("-", 2)
    subdir = segments[-2]
    channel = url[: url.rindex("/" + segments[-2] + "/")] + "/"
    number = re.search(r"_(\d+)$", build)
    for label, value, pattern in (("sha256", sha256, _SHA256), ("md5", md5, _MD5)):
        if value is not None and (not isinstance(value, str) or not pattern.match(value)):
            raise ValueError(f"{label} {value!r} of {file_name} is not a hex digest")
    return Package(name=name, version=version, build=build, build_number=int(number.group(1)) if number else 0,
                   subdir=subdir, channel=channel, url=url, file_name=file_name,
                   sha256=sha256.lower() if sha256 else None, md5=md5.lower() if md5 else None,
                   depends=depends, **extra)


def parse_explicit(text: str, source: str, platform: str) -> Lock:
    """CEP 23 @EXPLICIT: `url[#md5|#sha256:hex|#<64 hex>]` lines after the @EXPLICIT tag."""
    packages: list[Package] = []
    seen_tag = False
    file_platform = platform
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*platform:\s*(\S+)", line)
            if m:
                file_platform = m.group(1)
            continue
        if line == "@EXPLICIT":
            seen_tag = True
            continue
        if not seen_tag:
            raise SpecError(f"{source}:{number}:1: a package line before the @EXPLICIT tag")
        url, _, fragment = line.partition("#")
        sha256 = md5 = None
        fragment = fragment.removeprefix("sha256:")
        if _SHA256.match(fragment):
            sha256 = fragment
        elif _MD5.match(fragment):
            md5 = fragment
        elif fragment:
            raise SpecError(f"{source}:{number}:{len(url) + 2}: '{fragment}' is neither an md5 nor a sha256")
        try:
            packages.append(package_from_url(url.strip(), sha256=sha256, md5=md5))
        except ValueError as exc:
            raise SpecError(f"{source}:{number}:1: {exc}") from None
    if not seen_tag:
        raise SpecError(f"{source}:1:1: the @EXPLICIT tag is missing")
    _check_platform(source, file_platform, platform)
    return Lock(platform=platform, packages=tuple(packages), channels=_channels(packages), engine="explicit")


def parse_conda_lock(text: str, source: str, platform: str) -> Lock:
    """conda-lock.yml version 1: the `manager: conda` packages of one platform."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("package"), list):
        raise SpecError(f"{source}: not a conda-lock version 1 file", hint="conda-lock >= 1.0 writes version: 1")
    metadata = data.get("metadata") or {}
    platforms = metadata.get("platforms") if isinstance(metadata, dict) else None
    if not isinstance(platforms, list):
        raise SpecError(f"{source}: metadata.platforms must be a list", hint="conda-lock >= 1.0 writes it")
    if platform not in platforms:
        raise SpecError(f"{source}: locked for {', '.join(map(str, platforms)) or 'no platform'}, not {platform}",
                        hint="re-lock with conda-lock -p " + platform)
    packages = []
    pip = []
    for entry in data["package"]:
        if not isinstance(entry, dict) or entry.get("platform") != platform:
            continue
        if entry.get("manager") in ("pip", "pypi"):
            digest = (entry.get("hash") or {}).get("sha256") if isinstance(entry.get("hash"), dict) else None
            if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest)):
                raise SpecError(f"{source}: pip package {entry.get('name', '?')}: sha256 is not a hex digest")
            pip.append(PipPackage(name=str(entry.get("name", "")), version=str(entry.get("version", "")),
                                  url=str(entry.get("url", "")), sha256=digest))
            continue
        if entry.get("manager") != "conda":
            continue
        hashes = entry.get("hash") or {}
        deps = entry.get("dependencies") or {}
        if not isinstance(hashes, dict):
            raise SpecError(f"{source}: package {entry.get('name', '?')}: 'hash' must be a mapping")
        depends = tuple(f"{k} {v}".strip() for k, v in deps.items()) if isinstance(deps, dict) else ()
        try:
            packages.append(package_from_url(str(entry["url"]), sha256=hashes.get("sha256"), md5=hashes.get("md5"),
                                             depends=depends))
        except (KeyError, ValueError) as exc:
            raise SpecError(f"{source}: package {entry.get('name', '?')}: {exc}") from None
    return Lock(platform=platform, packages=tuple(packages), channels=_channels(packages), engine="conda-lock",
                pip=tuple(pip))


def parse_pixi(path: Path, platform: str) -> Lock:
    """pixi.lock (rattler's own format): the default environment's conda records."""
    import rattler

    try:
        env = rattler.LockFile.from_path(path).default_environment()
    except Exception as exc:  # rattler raises its own exception types for every parse failure
        raise SpecError(f"{path}: cannot read pixi.lock: {exc}") from None
    if env is None:
        raise SpecError(f"{path}: no default environment")
    locked = next((p for p in env.platforms() if p.name == platform), None)
    records = env.conda_repodata_records_for_platform(locked) if locked is not None else None
    if records is None:
        raise SpecError(f"{path}: nothing locked for {platform}")
    packages = [package_of(r) for r in records]
    return Lock(platform=platform, packages=tuple(packages), channels=_channels(packages), engine="pixi")


def _channels(packages: list[Package]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.channel for p in packages))


def _check_platform(source: str, found: str, wanted: str) -> None:
    if found != wanted:
        raise SpecError(f"{source}: locked for {found}, not {wanted}",
                        hint="export the lock on a " + wanted + " machine")


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
