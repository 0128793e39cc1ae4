"""A channel's repodata files: which channel and package a repodata error comes from (rattler only
says "invalid type: null"), and whether a ``file://`` channel's files changed (``file_stamp``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from provisiond.domain.channels import null_field
from provisiond.domain.errors import ChannelDataError
from provisiond.domain.urls import mask

MAX_REPODATA = 512 << 20  # bytes of a repodata.json we read to find the broken record
_REPODATA_FILES = ("repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst")


def is_data_error(text: str) -> bool:
    """True if a gateway error is about the repodata's content, not about reaching the channel."""
    return "invalid type: null" in text or "failed to extract repodata records" in text


def data_error(text: str, channels: Iterable[str], subdirs: Iterable[str], cache: Path) -> ChannelDataError:
    """A ChannelDataError naming the channel and the package whose record is broken, when found."""
    subdirs = list(subdirs)
    for base in channels:
        for subdir in subdirs:
            found = null_field(_repodata(base.rstrip("/") + f"/{subdir}/repodata.json", cache))
            if found is not None:
                file_name, field = found
                return ChannelDataError(
                    f"channel {mask(base.rstrip('/'))} ({subdir}): package {file_name} has null for {field}",
                    hint="the channel's repodata is broken: report it to the channel's maintainers, or "
                         "remove the channel")
    return ChannelDataError(f"a channel's repodata is broken: {mask(text)}",
                            hint="a record holds null where a value belongs; report it to the channel's maintainers")


def _repodata(url: str, cache: Path) -> object:
    path: Path | None = None
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
    else:  # rattler's cache: <name>.json beside <name>.info.json, which records the URL
        for info in cache.glob("*.info.json") if cache.is_dir() else ():
            try:
                if json.loads(info.read_text()).get("url") == url:
                    path = info.with_name(info.name[: -len(".info.json")] + ".json")
                    break
            except (OSError, ValueError, AttributeError):
                continue
    try:
        if path is None or path.stat().st_size > MAX_REPODATA:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def file_stamp(url: str, subdirs: list[str]) -> object:
    """For a ``file://`` channel: the identity of its repodata files (None for other schemes)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    root = Path(unquote(parts.path))
    stamp: list[tuple[int, int, int] | None] = []
    for subdir in subdirs:
        for name in _REPODATA_FILES:
            try:
                st = (root / subdir / name).stat()
            except OSError:
                stamp.append(None)
            else:
                stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)
