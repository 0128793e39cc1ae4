"""Credentials in channel URLs never leave the daemon: mask them in logs, answers and exports."""

from __future__ import annotations

import re

# The userinfo of a URL: everything in its authority up to the last "@" (a password may hold an
# unencoded "@"). The authority ends at "/", "?", "#", whitespace, or a quote or bracket around the URL.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s\"'<>\\]*@")
# anaconda.org-style /t/<token>/ path segments (the lookahead finds both in /t/a/t/b/).
_TOKEN = re.compile(r"/t/[^/\s]+(?=/)")
# A whole URL, for stripping: up to whitespace, or a quote or bracket around it.
_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<rest>[^\s\"'<>\\]*)")


def mask(text: str) -> str:
    """``https://u:secret@host/t/tok/c`` → ``https://***@host/t/***/c`` anywhere in ``text``.

    The whole userinfo goes: a token given as the user name (``https://TOKEN@host``) is a secret too.
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    return _TOKEN.sub("/t/***", text)


def strip_credentials(text: str) -> str:
    """Every URL in ``text`` without its userinfo and ``/t/<token>/`` segments, for files that leave the store.

    ``https://u:secret@host/t/tok/c/x.conda`` → ``https://host/c/x.conda``. Only inside URLs (so a path
    such as ``lib/t/x/`` is left alone), and never in ``file:`` URLs, which hold neither.
    """
    return _URL.sub(_strip_url, text)


def _strip_url(match: re.Match[str]) -> str:
    scheme, rest = match["scheme"], match["rest"]
    if scheme.lower() == "file":
        return match[0]
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority, tail = rest[:end].rpartition("@")[2], _TOKEN.sub("", rest[end:])
    return f"{scheme}://{authority}{tail}"


def short_channel(base_url: str, channel_alias: str) -> str:
    """The name conda shows for a channel: ``https://conda.anaconda.org/conda-forge/`` → ``conda-forge``."""
    if base_url.startswith(channel_alias):
        return base_url[len(channel_alias):].strip("/")
    return mask(base_url.rstrip("/"))
