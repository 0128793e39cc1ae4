"""The engine protocol: what the builder needs from rattler or micromamba.

Time limits belong to the engine (``connect_timeout``, ``fetch_timeout``, ``solve_timeout``
settings): a channel that does not answer ends a solve or an install with
``ChannelTimeoutError``. Cancelling ``solve`` or ``install`` stops the work: an engine returns
(re-raising the cancellation) only once nothing of it writes into ``build_dir`` any more.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock
from provisiond.domain.spec import EnvSpec

OnLine = Callable[[str], None]


class Engine(Protocol):
    name: str
    platform: str
    # True when the engine cannot install elsewhere and relocate (micromamba): build at the final path.
    builds_in_place: bool

    def version(self) -> str: ...

    def virtual_packages(self) -> list[str]:
        """Virtual packages as ``name=version=build`` strings (part of spec_key), detected again when
        the system changed (``engines/virtual.py``)."""
        ...

    def channel_urls(self, spec: EnvSpec) -> list[str]:
        """The spec's channels as base URLs, expanded through ``channel_alias``, without credentials,
        in priority order (then those named only in ``channel::pkg``): part of spec_key."""
        ...

    async def solve(self, spec: EnvSpec, *, refresh: bool = False, max_age: float = float("inf")) -> Lock:
        """Solve ``spec``. Repodata the engine holds that was fetched more than ``max_age`` seconds
        ago is checked again first (HTTP validators, a file's mtime); ``refresh`` fetches it anew."""
        ...

    async def install(self, lock: Lock, build_dir: Path, target_prefix: Path, on_line: OnLine,
                      progress: BuildProgress | None = None) -> None:
        """Install every record of ``lock`` into ``build_dir`` with files written for ``target_prefix``.

        ``progress`` receives phase events (download, link) when someone may be watching.
        """
        ...
