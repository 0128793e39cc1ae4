"""FakeEngine: a real ``Engine`` with controllable latency and failures, for races in-process.

It is an engine, not a mock of our code: ``solve`` turns each dependency into one package
(``name``, ``name=1.2`` or ``name==1.2``; version 1.0 by default), and ``install`` writes a small
prefix (``conda-meta/<dist>.json`` and ``bin/<name>``) into the build dir. Tests hold a phase for a
package (``hold("install", "hello")``) to order concurrent work, wait until it has started
(``await engine.started("install", "hello")``), release it (``gate.set()``), or make it fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock, Package
from provisiond.domain.spec import EnvSpec
from provisiond.engines.base import OnLine

__all__ = ["FakeEngine"]

_SPEC = re.compile(r"([A-Za-z0-9_.-]+)(?:==?([A-Za-z0-9_.*]+))?")


class FakeEngine:
    """Solves and installs instantly, except where a test holds or fails a phase."""

    name = "fake"
    builds_in_place = False

    def __init__(self, platform: str = "linux-64", channel: str = "https://fake.invalid/main") -> None:
        self.platform = platform
        self.channel = channel
        self.calls: list[tuple[str, str]] = []  # (phase, package name) in the order they started
        self._gates: dict[tuple[str, str], asyncio.Event] = {}
        self._failures: dict[tuple[str, str], Callable[[], BaseException]] = {}
        self._started: dict[tuple[str, str], asyncio.Event] = {}

    def version(self) -> str:
        return "fake 1"

    def virtual_packages(self) -> list[str]:
        return ["__unix=0=0", "__linux=6.1=0"]

    def channel_urls(self, spec: EnvSpec) -> list[str]:
        return [self.channel]

    # -- controls ---------------------------------------------------------------------------

    def hold(self, phase: str, package: str) -> asyncio.Event:
        """Block ``phase`` ("solve" or "install") of every request naming ``package`` until set."""
        gate = self._gates[(phase, package)] = asyncio.Event()
        return gate

    def fail(self, phase: str, package: str, error: Callable[[], BaseException]) -> None:
        """Make ``phase`` raise ``error()`` for requests naming ``package`` (after any hold)."""
        self._failures[(phase, package)] = error

    async def started(self, phase: str, package: str) -> None:
        """Return once ``phase`` has started for a request naming ``package``."""
        await self._started.setdefault((phase, package), asyncio.Event()).wait()

    # -- the Engine protocol ----------------------------------------------------------------

    async def solve(self, spec: EnvSpec, *, refresh: bool = False, max_age: float = float("inf")) -> Lock:
        packages = []
        for dependency in spec.dependencies:
            match = _SPEC.match(dependency.split("::")[-1])
            if match is None:
                continue
            name, version = match.group(1), (match.group(2) or "1.0").replace("*", "0")
            file_name = f"{name}-{version}-fake_0.conda"
            packages.append(Package(
                name=name, version=version, build="fake_0", build_number=0, subdir=self.platform,
                channel=self.channel, url=f"{self.channel}/{self.platform}/{file_name}", file_name=file_name,
                sha256=hashlib.sha256(file_name.encode()).hexdigest()))
        await self._phase("solve", [p.name for p in packages])
        return Lock(platform=self.platform, packages=tuple(packages), channels=(self.channel,), engine=self.name)

    async def install(self, lock: Lock, build_dir: Path, target_prefix: Path, on_line: OnLine,
                      progress: BuildProgress | None = None) -> None:
        await self._phase("install", [p.name for p in lock.packages])
        meta = build_dir / "conda-meta"
        meta.mkdir(parents=True, exist_ok=True)
        (build_dir / "bin").mkdir(exist_ok=True)
        for package in lock.packages:
            record = {"name": package.name, "version": package.version, "build": package.build,
                      "url": package.url, "files": [f"bin/{package.name}"]}
            (meta / f"{package.dist}.json").write_text(json.dumps(record))
            (build_dir / "bin" / package.name).write_text(f"#!/bin/sh\necho {package.dist} from {target_prefix}\n")
            on_line(f"linked {package.dist}")

    async def _phase(self, phase: str, names: list[str]) -> None:
        for name in names:
            self.calls.append((phase, name))
            self._started.setdefault((phase, name), asyncio.Event()).set()
        for name in names:
            gate = self._gates.get((phase, name))
            if gate is not None:
                await gate.wait()
        for name in names:
            error = self._failures.get((phase, name))
            if error is not None:
                raise error()
