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


_CANONICAL = re.compile(r"https://[a-z0-9.-]+/[^%?#@\s]*\Z")
_SPLIT = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://([^/?#]*)([^?#]*)")


def canonical_url(url: str) -> str:
    """The identity of an artifact URL, whatever its spelling (env_key, lockfiles.py).

    ``HTTP://bob:tok@Conda.Anaconda.ORG:443/t/abc/conda-forge//linux-64/x%2By-1-0.conda`` and
    ``https://conda.anaconda.org/conda-forge/linux-64/x+y-1-0.conda`` are one artifact: the scheme
    (``http`` counts as ``https``), the host's case, a default port, credentials (userinfo and
    ``/t/<token>/``), repeated ``/`` and percent-encoding do not change it. ``file://localhost/p`` is
    ``file:///p``. Query and fragment (a hash in an @EXPLICIT line) are not part of it.
    """
    if _CANONICAL.match(url) and "//" not in url[8:] and "/t/" not in url:
        return url  # the common case, 10x cheaper: already lower-case https, no credentials, escapes, port
    from urllib.parse import unquote

    match = _SPLIT.match(url.strip())
    if match is None:
        return unquote(url.strip())
    scheme, authority, path = match[1].lower(), match[2].rpartition("@")[2].lower(), match[3]
    if scheme == "http":
        scheme = "https"
    host, _, port = authority.partition(":")
    if scheme == "https" and port in ("80", "443"):  # the default port of either spelling
        authority = host
    if scheme == "file" and authority == "localhost":
        authority = ""
    path = re.sub(r"/{2,}", "/", unquote(path))
    if scheme != "file":
        path = re.sub(r"/t/[^/]+(?=/)", "", path)
    return f"{scheme}://{authority}{path}"
