"""Channel credentials stay in the store: what leaves it (a bundle) or is rewritten in place is scrubbed.

A prefix records channel URLs in ``conda-meta``'s records and history and in pip's
``direct_url.json``; a lock records them in every package. ``bundle.py`` scrubs the copies it
writes, ``credentials.scrub_store`` the store's own files once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from provisiond.domain.urls import strip_credentials

__all__ = ["scrub_lock", "scrub_prefix_file"]


def scrub_lock(path: Path, inner: str) -> bytes | None:
    """The lock with credentials stripped from every URL in it, in the lock's canonical JSON.

    Its ``env_key`` field stays the store's: the key names the prefix (and the prefix is written
    into installed files), even though the stripped URLs no longer hash to it.
    """
    return _scrub_json(path.read_bytes(), lambda clean: json.dumps(
        clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def scrub_prefix_file(path: Path, inner: str) -> bytes | None:
    """The files of a prefix that record channel URLs: conda-meta's records and history, pip's direct_url.json."""
    parts = PurePosixPath(inner).parts
    record = len(parts) == 2 and parts[0] == "conda-meta" and parts[1].endswith(".json")
    direct_url = len(parts) >= 2 and parts[-1] == "direct_url.json" and parts[-2].endswith(".dist-info")
    is_json = record or direct_url
    if not is_json and parts != ("conda-meta", "history"):
        return None
    raw = path.read_bytes()
    if b"://" not in raw and b":\\/\\/" not in raw:  # JSON may write "/" as "\/"
        return None
    if is_json:
        return _scrub_json(raw, lambda clean: json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    return _scrub_text(raw)


def _scrub_json(raw: bytes, dump: Callable[[Any], str]) -> bytes | None:
    """Every string of a JSON document stripped, written back with ``dump`` if anything changed."""
    try:
        data = json.loads(raw)
    except ValueError:
        return _scrub_text(raw)  # not ours to judge: strip it as text
    clean = _strip_json(data)
    return None if clean == data else dump(clean).encode()


def _scrub_text(raw: bytes) -> bytes | None:
    text = raw.decode("utf-8", "surrogateescape")
    clean = strip_credentials(text)
    return None if clean == text else clean.encode("utf-8", "surrogateescape")


def _strip_json(value: Any) -> Any:
    if isinstance(value, str):
        return strip_credentials(value)
    if isinstance(value, list):
        return [_strip_json(v) for v in value]
    if isinstance(value, dict):
        return {strip_credentials(k): _strip_json(v) for k, v in value.items()}
    return value
