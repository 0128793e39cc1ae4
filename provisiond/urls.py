"""Credentials in channel URLs never leave the daemon: mask them in logs, answers and exports."""

from __future__ import annotations

import re

# user:password@ in the authority, and anaconda.org-style /t/<token>/ path segments.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::[^/@\s]*)?@")
_TOKEN = re.compile(r"/t/[^/\s]+/")


def mask(text: str) -> str:
    """``https://u:secret@host/t/tok/c`` → ``https://u:***@host/t/***/c`` anywhere in ``text``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _TOKEN.sub("/t/***/", text)


def short_channel(base_url: str, channel_alias: str) -> str:
    """The name conda shows for a channel: ``https://conda.anaconda.org/conda-forge/`` → ``conda-forge``."""
    if base_url.startswith(channel_alias):
        return base_url[len(channel_alias):].strip("/")
    return mask(base_url.rstrip("/"))
