"""``provisionctl check``: an environment file as a build reads it; a lockfile's format, platforms,
environments, package counts and problems."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from provisiond.domain.channels import with_defaults
from provisiond.domain.errors import ProvisionError, SpecError
from provisiond.domain.lockfiles import (
    explicit_platform,
    kind_of,
    kind_of_text,
    parse_conda_lock,
    parse_explicit,
    parse_pixi,
    read_conda_lock,
    read_lockfile,
)
from provisiond.domain.spec import load_spec

FORMATS = {"explicit": "@EXPLICIT", "conda-lock": "conda-lock v1", "pixi": "pixi.lock"}
_SUBDIR = re.compile(r"/([a-z0-9_]+-[a-z0-9_]+|noarch)/[^/\s#]+(?:\.conda|\.tar\.bz2)(?:#|\s|$)", re.M)


def check(path: Path, environment: str | None, default_channels: Sequence[str]) -> dict[str, Any]:
    """``provisionctl check FILE``, wherever it runs (the CLI without a daemon, or ``POST /v1/check``):
    an environment file as ``check_spec`` reads it, a lockfile as ``describe``; a problem is a ``SpecError``."""
    if kind_of(path) == "spec":
        if environment is not None:
            raise SpecError(f"{path}: --environment is for pixi.lock files, not environment files")
        return check_spec(path, default_channels=default_channels)
    report = describe(path, environment)
    if report["problems"]:
        count = len(report["problems"])
        raise SpecError(f"{path}: {report['format']} file with {count} problem{'s' if count > 1 else ''}:\n"
                        + "\n".join(f"  {p}" for p in report["problems"]),
                        hint="fix the file, or lock it again (provisionctl lock, conda-lock, pixi lock)")
    return report


def check_named(file: str, path: str, content: str | None, environment: str | None,
                default_channels: Sequence[str]) -> dict[str, Any]:
    """``check`` of the file the user named ``file``, read at ``path`` (absolute), or, with
    ``content`` (the text of a pipe such as ``<(...)``, read by the CLI), from a private copy.

    Whoever runs it and wherever the file is read, the answer and the errors name ``file`` as the
    user wrote it, and ``project_dir`` is the directory ``path`` is in: the same output as
    ``check`` of ``file`` from the user's working directory.
    """
    if content is None:
        return _renamed(lambda: check(Path(path), environment, default_channels), {path: file})
    with tempfile.TemporaryDirectory(prefix="provisiond-check-") as tmp:
        name = os.path.basename(path)
        copy = Path(tmp) / (name if name not in ("", ".", "..") else "input")  # a name tells a pixi.lock
        copy.write_text(content, encoding="utf-8")
        return _renamed(lambda: check(copy, environment, default_channels),
                        {str(copy): file, tmp: os.path.dirname(path)})


def _renamed(run: Callable[[], dict[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    """``run()``, with each path of ``names`` in its answer or its error replaced by its value."""
    def rename(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in names.items():  # the longer path first: a file's name before its directory's
                value = value.replace(old, new)
            return value
        if isinstance(value, list):
            return [rename(v) for v in value]
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        return value

    try:
        result: dict[str, Any] = rename(run())
    except ProvisionError as exc:
        exc.message, exc.hint = rename(exc.message), rename(exc.hint)
        exc.args = (exc.message,)
        raise
    return result


def check_spec(path: str | os.PathLike[str], default_channels: Sequence[str]) -> dict[str, Any]:
    """``provisionctl check FILE``: the parsed spec, with what a build would do about its channels."""
    spec = load_spec(path)
    wire = spec.to_wire()
    if not spec.channels and not spec.nodefaults:
        if not default_channels:
            raise SpecError(f"{spec.source}:1:1: no 'channels:', and no default_channels are configured",
                            hint="add a 'channels:' list (e.g. [conda-forge]), or set default_channels")
        wire["warnings"].append(f"{spec.source}:1:1: no 'channels:'; the default channels are used: "
                                + ", ".join(default_channels))
    if "defaults" in spec.channels and not default_channels:
        raise SpecError(f"{spec.source}:1:1: 'defaults' in channels:, but no default_channels are configured",
                        hint="set default_channels, or name the channels (e.g. conda-forge)")
    wire["resolved_channels"] = with_defaults(spec.channels, spec.nodefaults, default_channels)
    return wire


def describe(path: Path, environment: str | None = None) -> dict[str, Any]:
    """What a lockfile holds, every (environment, platform) read as an install would read it.

    ``problems`` lists what an install would refuse; ``check`` exits 65 when there is one.
    """
    text = read_lockfile(path)
    kind = kind_of_text(path.name, text)
    if kind not in FORMATS:
        raise SpecError(f"{path}: not a lockfile")
    targets: list[tuple[str | None, str]] = []
    problems: list[str] = []
    data: dict[str, Any] | None = None
    if kind == "explicit":
        platform = explicit_platform(text)
        subdirs = sorted({m.group(1) for m in _SUBDIR.finditer(text)} - {"noarch"})
        if platform is None and len(subdirs) > 1:
            problems.append(f"{path}: packages of several platforms ({', '.join(subdirs)}) in one @EXPLICIT file")
        targets = [(None, platform or (subdirs[0] if subdirs else "noarch"))]
    elif kind == "conda-lock":
        try:
            data = read_conda_lock(text, str(path))  # once: a large file takes seconds to load
        except SpecError as exc:
            problems.append(exc.message)
        else:
            targets = [(None, p) for p in _conda_lock_platforms(data, str(path), problems)]
    else:
        targets = _pixi_targets(path, problems)
        if environment is not None:
            if environment not in {e for e, _p in targets}:
                problems.append(f"{path}: no environment {environment!r}")
            targets = [t for t in targets if t[0] == environment]
    environments = []
    for environment, platform in targets:
        try:
            if kind == "explicit":
                lock = parse_explicit(text, str(path), platform)
            elif kind == "conda-lock":
                lock = parse_conda_lock(text, str(path), platform, data)
            else:
                lock = parse_pixi(path, platform, environment)
        except SpecError as exc:
            problems.append(exc.message)
            continue
        environments.append({"environment": environment, "platform": platform, "conda": len(lock.packages),
                             "pypi": len(lock.pip), "env_key": lock.env_key})
    return {"file": str(path), "format": FORMATS[kind],
            "platforms": sorted({p for _e, p in targets}),
            "environments": sorted({e for e, _p in targets if e is not None}),
            "packages": environments, "problems": problems}


def _conda_lock_platforms(data: dict[str, Any], source: str, problems: list[str]) -> list[str]:
    metadata = data.get("metadata") if isinstance(data, dict) else None
    platforms = metadata.get("platforms") if isinstance(metadata, dict) else None
    if not isinstance(platforms, list) or not platforms:
        problems.append(f"{source}: metadata.platforms must be a non-empty list")
        return []
    listed = {str(e.get("platform")) for e in data.get("package") or () if isinstance(e, dict)}
    for extra in sorted(listed - {str(p) for p in platforms}):
        problems.append(f"{source}: packages for {extra}, which metadata.platforms does not list")
    return [str(p) for p in platforms]


def _pixi_targets(path: Path, problems: list[str]) -> list[tuple[str | None, str]]:
    import rattler

    try:
        lockfile = rattler.LockFile.from_path(path)
    except Exception as exc:  # rattler raises its own exception types for every parse failure
        problems.append(f"{path}: cannot read pixi.lock: {exc}")
        return []
    return sorted((name, p.name) for name, env in lockfile.environments() for p in env.platforms())
