"""Channel credentials: kept out of the store, in one per-user file, re-attached in memory.

A channel URL may carry a token (``https://host/t/<token>/channel``, conda's convention) or a
user and password (``https://user:secret@host/channel``). Everything the store keeps (locks, the
solve cache, logs, the envs' ``conda-meta``) holds the URL without them; this module remembers
them in ``Paths.credentials`` (mode 0600, in the 0700 per-user state dir) under the
credential-free base URL, and gives them back to the engine when it downloads:

- ``mirrors()`` for rattler's ``MirrorMiddleware``: a request under the clean base URL goes to the
  same URL with its ``/t/<token>/`` segment, so rattler only ever sees, caches and writes clean URLs;
- ``headers()`` for rattler's ``AddHeadersMiddleware``: ``Authorization: Basic`` for user:password;
- ``attach()`` for engines that take whole URLs (micromamba's explicit file).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

from provisiond.config.settings import Paths
from provisiond.domain.errors import ConfigError
from provisiond.domain.urls import mask, strip_credentials
from provisiond.store.files import write_atomic

log = logging.getLogger(__name__)

VERSION = 1


class Credentials:
    """Credential-free channel base URL → the URL as the user wrote it, persisted in one 0600 file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._channels = self._load()
        # Bumped on every change: an engine rebuilds its HTTP client when it sees a new value.
        self.generation = 0

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: cannot read the channel credentials: {exc}",
                              hint="remove it; the next solve of a file that names the channels writes it again"
                              ) from None
        channels = data.get("channels") if isinstance(data, dict) else None
        if not isinstance(channels, dict) or data.get("version") != VERSION:
            raise ConfigError(f"{self.path}: not a version-{VERSION} credentials file",
                              hint="remove it; the next solve of a file that names the channels writes it again")
        return {str(k): str(v) for k, v in channels.items()}

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)  # mkdir's mode is masked by the umask; an old dir may be open
        write_atomic(self.path, json.dumps({"version": VERSION, "channels": self._channels},
                                           indent=1, sort_keys=True) + "\n", 0o600)

    def __bool__(self) -> bool:
        return bool(self._channels)

    def remember(self, base_url: str) -> str:
        """``base_url`` (a channel's) without credentials; its credentials are kept for downloads."""
        clean = strip_credentials(base_url)
        if clean != base_url and self._channels.get(clean) != base_url:
            # A new dict, never a change to the old one: rattler's threads may be iterating it (headers()).
            self._channels = {**self._channels, clean: base_url}
            self._save()
            self.generation += 1
            log.info("channel %s: credentials kept in %s", clean, self.path)
        return clean

    def attach(self, url: str) -> str:
        """``url`` with the credentials of the longest remembered base URL it starts with."""
        best = max((clean for clean in self._channels if url.startswith(clean)), key=len, default=None)
        return url if best is None else self._channels[best] + url[len(best):]

    def mirrors(self) -> dict[str, list[str]]:
        """Clean base URL → [the same URL with its ``/t/<token>/`` segments] (userinfo goes in a header)."""
        out = {}
        for clean, url in self._channels.items():
            parts = urlsplit(url)
            tokened = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            if tokened != clean:
                out[clean] = [tokened]
        return out

    def headers(self, host: str, path: str) -> dict[str, str] | None:
        """``Authorization`` for a request to ``host`` + ``path``, or None.

        rattler's AddHeadersMiddleware gives the host name without the port, so two channels on one
        host with different passwords are told apart by their paths only.
        """
        best: tuple[int, str] | None = None
        for clean, url in self._channels.items():  # called from rattler's threads: see remember()
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
            target = urlsplit(clean)
            if (userinfo and target.hostname == host.lower() and path.startswith(target.path or "/")
                    and (best is None or len(target.path) > best[0])):
                best = (len(target.path), userinfo)
        if best is None:
            return None
        user, _, password = best[1].partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def scrub_store(paths: Paths, db: sqlite3.Connection) -> int:
    """Move the credentials an older provisiond wrote into the store to the credentials file.

    Its locks and solve-cache rows are rewritten without them (same env_key), and so are, for the
    envs whose lock held any, the prefix's conda-meta records; then the package cache's records,
    the repodata cache's ``.info.json`` files and the registry's error texts. A store without any
    costs one read of each lock file. Returns the number of locks rewritten.
    """
    from provisiond.domain.errors import ProvisionError
    from provisiond.domain.lock import Lock
    from provisiond.store.scrub import scrub_prefix_file

    credentials: Credentials | None = None

    def clean(lock: Lock) -> Lock | None:
        nonlocal credentials
        stripped = lock.without_credentials()
        if stripped is lock:
            return None
        credentials = credentials or Credentials(paths.credentials)
        for base in {*lock.channels, *(p.channel for p in lock.packages),
                     *(p.url.rsplit("/", 2)[0] + "/" for p in lock.packages)}:
            credentials.remember(base)
        return stripped

    def rewrite(path: Path, inner: str) -> None:
        data = scrub_prefix_file(path, inner)
        if data is not None:
            write_atomic(path, data.decode("utf-8", "surrogateescape"))

    rewritten = 0
    for path in sorted(paths.locks.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        try:
            stripped = clean(Lock.from_json(text)) if strip_credentials(text) != text else None
        except ProvisionError:
            continue
        if stripped is None:
            continue
        write_atomic(path, stripped.to_json())
        rewritten += 1
        meta = paths.prefix(stripped.env_key) / "conda-meta"
        for record in meta.glob("*") if meta.is_dir() else ():
            rewrite(record, f"conda-meta/{record.name}")
    # secure_delete: the old rows' bytes are overwritten, not left in free pages of state.db.
    db.execute("PRAGMA secure_delete=ON")
    try:
        for spec_key, text in db.execute("SELECT spec_key, lock FROM solves").fetchall():
            if strip_credentials(text) != text and (stripped := clean(Lock.from_json(text))) is not None:
                db.execute("UPDATE solves SET lock=? WHERE spec_key=?", (stripped.to_json(), spec_key))
        if credentials is not None:
            for table, key in (("builds", "id"), ("names", "name")):
                for row_key, error in db.execute(f"SELECT {key}, error FROM {table} WHERE error LIKE '%://%'"
                                                 ).fetchall():
                    db.execute(f"UPDATE {table} SET error=? WHERE {key}=?", (mask(error), row_key))
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.execute("PRAGMA secure_delete=OFF")
    if credentials is not None:  # what the engine cached from those URLs
        for record in [*paths.pkgs.glob("*/info/repodata_record.json"),  # rattler's layout, then micromamba's
                       *paths.pkgs.glob("http/**/info/repodata_record.json")]:
            rewrite(record, "conda-meta/repodata_record.json")  # scrubbed as the JSON record it is
        for info in paths.repodata_cache.glob("*.info.json"):
            rewrite(info, "conda-meta/repodata.info.json")
        log.warning("moved the channel credentials of %d locks out of the store into %s", rewritten,
                    paths.credentials)
    return rewritten
