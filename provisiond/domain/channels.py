"""Channels as conda reads them: ``defaults``, no ``channels:`` at all, and local channels relative to the file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import quote, unquote

# conda's own default for `default_channels` on Linux and macOS (conda/base/constants.py).
DEFAULT_CHANNELS = ("https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r")


def local_channel(channel: str, project_dir: str | None) -> str:
    """A relative path or ``file://`` channel as an absolute ``file://`` URL, relative to ``project_dir``.

    ``./channel``, ``../c``, ``file://./channel`` and ``file:channel`` resolve against the environment
    file's directory (not the daemon's working directory). Anything else is returned as written.
    """
    if project_dir is None:
        return channel
    if channel.startswith("file:"):
        rest = channel[len("file:"):]
        path = rest[2:] if rest.startswith("//") else rest
        if path.startswith("localhost/"):
            path = path[len("localhost"):]
        if path.startswith("/"):
            return channel
        path = unquote(path)
    elif channel in (".", "..") or channel.startswith(("./", "../")):
        path = channel
    else:
        return channel
    absolute = os.path.normpath(os.path.join(project_dir, path))
    return "file://" + quote(absolute)


def with_defaults(channels: Sequence[str], nodefaults: bool, default_channels: Sequence[str]) -> list[str]:
    """``channels`` with ``defaults`` replaced by ``default_channels`` (conda's meaning), and
    ``default_channels`` for a file with no channels at all (unless it says ``nodefaults``)."""
    if not channels and not nodefaults:
        return list(default_channels)
    out: list[str] = []
    for channel in channels:
        for one in (default_channels if channel == "defaults" else (channel,)):
            if one not in out:
                out.append(one)
    return out


# The fields a repodata record must not have as null (rattler's PackageRecord: strings, a number, lists).
_REQUIRED = ("name", "version", "build", "build_number", "depends", "subdir")
_OPTIONAL_LISTS = ("constrains", "track_features")


def null_field(repodata: object) -> tuple[str, str] | None:
    """The first (file name, field) of a repodata.json whose record holds a ``null`` where a value
    belongs (the records rattler refuses with "invalid type: null"), or None."""
    if not isinstance(repodata, dict):
        return None
    for section in ("packages", "packages.conda"):
        records = repodata.get(section)
        for file_name, record in (records.items() if isinstance(records, dict) else ()):
            if not isinstance(record, dict):
                return (str(file_name), "the whole record")
            for key in _REQUIRED:
                if key in record and record[key] is None:
                    return (str(file_name), key)
            for key in ("depends", *_OPTIONAL_LISTS):
                value = record.get(key)
                if isinstance(value, list) and any(v is None for v in value):
                    return (str(file_name), f"an item of {key}")
    return None
