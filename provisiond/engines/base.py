"""The engine protocol: what the builder needs from rattler or micromamba."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from provisiond.events import BuildProgress
from provisiond.lock import Lock
from provisiond.spec import EnvSpec

OnLine = Callable[[str], None]


class Engine(Protocol):
    name: str
    platform: str
    # True when the engine cannot install elsewhere and relocate (micromamba): build at the final path.
    builds_in_place: bool

    def version(self) -> str: ...

    def virtual_packages(self) -> list[str]:
        """Detected virtual packages as ``name=version=build`` strings (part of spec_key)."""
        ...

    async def solve(self, spec: EnvSpec, *, refresh: bool = False) -> Lock: ...

    async def install(self, lock: Lock, build_dir: Path, target_prefix: Path, on_line: OnLine,
                      progress: BuildProgress | None = None) -> None:
        """Install every record of ``lock`` into ``build_dir`` with files written for ``target_prefix``.

        ``progress`` receives phase events (download, link) when someone may be watching.
        """
        ...
