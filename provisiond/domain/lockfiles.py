"""Read lockfiles into our Lock, without solving: @EXPLICIT files, conda-lock.yml v1, pixi.lock.

The same resolved packages give the same env_key whatever the input format, because env_key
hashes (url, sha256) pairs of our own Lock, never a file's bytes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from provisiond.domain.errors import PlatformError, SpecError
from provisiond.domain.lock import Lock, Package, PipPackage
from provisiond.domain.text import decode
from provisiond.domain.urls import canonical_url

if TYPE_CHECKING:
    import rattler

SUFFIXES = (".conda", ".tar.bz2")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


MAX_LOCK_BYTES = 256 << 20


def kind_of(path: Path) -> str:
    """``spec``, ``explicit``, ``conda-lock`` or ``pixi``, by name first (like micromamba), then content.

    The whole file is read (up to MAX_LOCK_BYTES): a long comment header, or a conda-lock file whose
    ``metadata:`` comes after 8 KiB of packages, is still recognised.
    """
    if not path.is_file():
        return "spec"  # load_spec reports a missing file, a directory or a FIFO
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LOCK_BYTES)
        text = decode(data, str(path))
    except (OSError, SpecError):
        return "spec"
    return kind_of_text(path.name, text)


def kind_of_text(name: str, text: str) -> str:
    """``kind_of`` for text already read."""
    if re.search(r"^[ \t]*@EXPLICIT[ \t\r]*$", text, re.M):
        return "explicit"
    version = re.search(r"^version:\s*(\d+)\s*$", text, re.M)
    if name == "pixi.lock" or (version and int(version.group(1)) >= 4 and re.search(r"^environments:", text, re.M)):
        return "pixi"
    if name.endswith(("-lock.yml", "-lock.yaml")) or (
            version and re.search(r"^package:", text, re.M) and re.search(r"^metadata:", text, re.M)):
        return "conda-lock"
    return "spec"


def read_lockfile(path: Path) -> str:
    """The text of a lockfile (UTF-8, or UTF-16/32 with a BOM), refusing one over MAX_LOCK_BYTES."""
    try:
        if path.stat().st_size > MAX_LOCK_BYTES:
            raise SpecError(f"{path}: larger than {MAX_LOCK_BYTES >> 20} MiB; not a lockfile")
        return decode(path.read_bytes(), str(path))
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from None


def load_lockfile(path: Path, platform: str, environment: str | None = None) -> Lock:
    """A Lock for ``platform`` from any supported lockfile (``environment``: a pixi.lock's, else its default)."""
    text = read_lockfile(path)
    kind = kind_of_text(path.name, text)
    if environment is not None and kind != "pixi":
        raise SpecError(f"{path}: --environment is for pixi.lock files; this is {_FORMATS.get(kind, kind)}")
    if kind == "explicit":
        return parse_explicit(text, str(path), platform)
    if kind == "conda-lock":
        return parse_conda_lock(text, str(path), platform)
    if kind == "pixi":
        return parse_pixi(path, platform, environment)
    raise SpecError(f"{path}: not a lockfile", hint="lockfiles: @EXPLICIT files, conda-lock.yml (v1), pixi.lock")


_FORMATS = {"explicit": "an @EXPLICIT file", "conda-lock": "a conda-lock file", "spec": "an environment file"}


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


def explicit_platform(text: str) -> str | None:
    """The ``# platform: X`` header of an @EXPLICIT file (or a rendered conda-lock env file), if any."""
    match = re.search(r"^#\s*platform:\s*(\S+)", text, re.M)
    return match.group(1) if match else None


def parse_explicit(text: str, source: str, platform: str) -> Lock:
    """CEP 23 @EXPLICIT: `url[#md5|#sha256:hex|#<64 hex>]` lines after the @EXPLICIT tag.

    A line repeated (in any URL spelling) counts once; two builds or versions of one package are an
    error naming both lines; each package's subdir must be ``platform`` or ``noarch``.
    """
    packages: list[Package] = []
    seen_tag = False
    file_platform = explicit_platform(text)
    if file_platform is not None:
        _check_platform(source, file_platform, platform)
    by_name: dict[str, tuple[int, Package]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "@EXPLICIT":
            seen_tag = True
            continue
        if not seen_tag:
            raise SpecError(f"{source}:{number}:1: a package line before the @EXPLICIT tag")
        url, _, fragment = line.partition("#")
        sha256 = md5 = None
        fragment = fragment.strip().removeprefix("sha256:")
        if _SHA256.match(fragment):
            sha256 = fragment
        elif _MD5.match(fragment):
            md5 = fragment
        elif fragment:
            raise SpecError(f"{source}:{number}:{len(url) + 2}: '{fragment}' is neither an md5 nor a sha256")
        try:
            package = package_from_url(url.strip(), sha256=sha256, md5=md5)
        except ValueError as exc:
            raise SpecError(f"{source}:{number}:1: {exc}") from None
        if package.subdir not in (platform, "noarch"):
            raise PlatformError(f"{source}:{number}:1: {package.file_name} is a {package.subdir} package, "
                                f"not {platform} or noarch", hint=f"export the lock on a {platform} machine")
        earlier = by_name.get(package.name)
        if earlier is not None:
            first, other = earlier
            if canonical_url(other.url) == canonical_url(package.url):
                continue  # the same artifact twice: once
            raise SpecError(f"{source}:{number}:1: two versions of {package.name}: {other.dist} (line {first}) "
                            f"and {package.dist} (line {number})", hint="keep one of the two lines")
        by_name[package.name] = (number, package)
        packages.append(package)
    if not seen_tag:
        raise SpecError(f"{source}:1:1: the @EXPLICIT tag is missing")
    return Lock(platform=platform, packages=tuple(packages), channels=_channels(packages), engine="explicit")


def read_conda_lock(text: str, source: str) -> dict[str, Any]:
    """The YAML of a conda-lock v1 file, checked for its version and package list."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("package"), list):
        raise SpecError(f"{source}: not a conda-lock version 1 file", hint="conda-lock >= 1.0 writes version: 1")
    return data


def parse_conda_lock(text: str, source: str, platform: str, data: dict[str, Any] | None = None) -> Lock:
    """conda-lock.yml version 1: the `manager: conda` packages of one platform (``data``: already read)."""
    if data is None:
        data = read_conda_lock(text, source)
    metadata = data.get("metadata") or {}
    platforms = metadata.get("platforms") if isinstance(metadata, dict) else None
    if not isinstance(platforms, list):
        raise SpecError(f"{source}: metadata.platforms must be a list", hint="conda-lock >= 1.0 writes it")
    if platform not in platforms:
        raise PlatformError(f"{source}: locked for {', '.join(map(str, platforms)) or 'no platform'}, not {platform}",
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
            package = package_from_url(str(entry["url"]), sha256=hashes.get("sha256"), md5=hashes.get("md5"),
                                       depends=depends)
        except (KeyError, ValueError) as exc:
            raise SpecError(f"{source}: package {entry.get('name', '?')}: {exc}") from None
        if package.subdir not in (platform, "noarch"):
            raise PlatformError(f"{source}: {package.file_name} is a {package.subdir} package, listed for {platform}")
        packages.append(package)
    return Lock(platform=platform, packages=tuple(packages), channels=_channels(packages), engine="conda-lock",
                pip=tuple(pip))


def parse_pixi(path: Path, platform: str, environment: str | None = None) -> Lock:
    """pixi.lock (rattler's own format): one environment's conda records and PyPI packages.

    ``environment`` names it (``--environment E``); default: ``default``. PyPI packages become pip pins
    installed by uv with their locked sha256; a local project (a path, not a URL) is installed from
    that path, resolved against the lock's directory, editable when the lock says ``editable: true``.
    """
    import rattler

    try:
        lockfile = rattler.LockFile.from_path(path)
    except Exception as exc:  # rattler raises its own exception types for every parse failure
        raise SpecError(f"{path}: cannot read pixi.lock: {exc}") from None
    name = environment or "default"
    env = lockfile.environment(name)
    if env is None:
        names = ", ".join(sorted(n for n, _ in lockfile.environments())) or "none"
        raise SpecError(f"{path}: no environment {name!r} (it has: {names})",
                        hint="choose one with --environment E")
    locked = next((p for p in env.platforms() if p.name == platform), None)
    if locked is None:
        found = ", ".join(p.name for p in env.platforms()) or "no platform"
        raise PlatformError(f"{path}: environment {name!r} is locked for {found}, not {platform}",
                            hint=f"re-lock with: pixi lock (with {platform} in the workspace's platforms)")
    packages = [package_of(r) for r in env.conda_repodata_records_for_platform(locked) or ()]
    text = path.read_text(errors="replace") if env.pypi_packages_for_platform(locked) else ""
    pip = tuple(_pixi_pypi(p, path, text) for p in env.pypi_packages_for_platform(locked) or ())
    return Lock(platform=platform, packages=tuple(packages), channels=_channels(packages), engine="pixi", pip=pip,
                meta={"environment": name} if environment else {})


def trusted_lock(path: Path, platform: str, lock: Lock) -> Lock:
    """What the trust gate fingerprints of a lockfile: ``lock`` itself, but for a pixi.lock the union of
    its environments locked for ``platform``, so that envs made from its environments share one allowance."""
    if lock.engine != "pixi":
        return lock
    import rattler

    try:
        names = sorted(name for name, _env in rattler.LockFile.from_path(path).environments())
    except Exception:  # the file changed or went away since: the lock at hand is what is installed
        return lock
    packages, pip = {p.url: p for p in lock.packages}, set(lock.pip)
    for name in names:
        try:
            other = parse_pixi(path, platform, name)
        except SpecError:
            continue  # an environment for other platforms only
        packages.update((p.url, p) for p in other.packages)
        pip.update(other.pip)
    return Lock(platform=platform, packages=tuple(packages.values()), engine="pixi", pip=tuple(pip))


def _pixi_pypi(package: Any, path: Path, text: str) -> PipPackage:
    """A pixi.lock PyPI entry as a pip pin: by URL and sha256, or a local project by its path."""
    location = str(package.location)
    try:
        sha = package.hashes.sha256 if package.hashes is not None else None
    except AttributeError:  # rattler's PackageHashes of an entry without hashes (a local project)
        sha = None
    digest = sha.hex() if isinstance(sha, bytes) else sha
    if "://" in location and not location.startswith("file:"):
        return PipPackage(name=str(package.name), version=str(package.version), url=location, sha256=digest)
    local = Path(unquote(urlsplit(location).path) if location.startswith("file:") else location)
    local = Path(os.path.normpath(path.parent / local))
    if not local.exists():
        raise SpecError(f"{path}: PyPI package {package.name} is the local project {location!r}, "
                        f"but {local} does not exist", hint="run from the checkout the lock belongs to")
    if local.is_file():  # a local wheel or sdist: by its hash when the lock has one
        return PipPackage(name=str(package.name), version=str(package.version), url=local.as_uri(), sha256=digest)
    entry = re.search(rf"^[ ]*- pypi: {re.escape(location)}[ ]*\n(?:[ ]{{3,}}\S.*\n)*?[ ]{{3,}}editable: true\b",
                      text, re.M)
    return PipPackage(name=str(package.name), version="", url=local.as_uri(),
                      editable=str(local) if entry else None)


def _channel_of(url: str, subdir: str) -> str:
    marker = f"/{subdir}/"
    return url[: url.rindex(marker) + 1] if marker in url else ""


def _channels(packages: list[Package]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.channel for p in packages))


def _check_platform(source: str, found: str, wanted: str) -> None:
    if found not in (wanted, "noarch"):
        raise PlatformError(f"{source}: locked for {found}, not {wanted}",
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
        # pixi.lock records carry no channel: the URL's, as package_from_url finds it
        channel=record.channel or _channel_of(record.url, record.subdir),
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
