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
from pathlib import Path
from urllib.parse import unquote, urlsplit

from provisiond.errors import ConfigError
from provisiond.files import write_atomic
from provisiond.urls import strip_credentials

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
            self._channels[clean] = base_url
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
        for clean, url in self._channels.items():
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
            target = urlsplit(clean)
            if userinfo and target.hostname == host.lower() and path.startswith(target.path or "/"):
                if best is None or len(target.path) > best[0]:
                    best = (len(target.path), userinfo)
        if best is None:
            return None
        user, _, password = best[1].partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
