"""Incremental re-lock (issue 13.1) and order-independent solving (13.2), with the real rattler solver.

For every edit kind, the answer of ``Locker.relock`` (the previous lock kept and pruned when it
satisfies the file, else a solve that prefers it) equals a solve of the new file with the previous
lock's packages as ``locked_packages``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import rattler

from provisiond.config.settings import load_settings
from provisiond.daemon.locking import Locker
from provisiond.domain.lock import Lock
from provisiond.domain.relock import relock
from provisiond.domain.spec import EnvSpec, parse_spec
from provisiond.engines.rattler import RattlerEngine
from provisiond.testing.channel import Pkg, build_channel, demo_packages, hello_pkg


def spec_on(channel: Path, *deps: str) -> EnvSpec:
    text = "\n".join(["channels:", f"  - {channel.as_uri()}", "dependencies:", *[f"  - {d}" for d in deps]])
    return parse_spec(text + "\n", source="environment.yml")


@pytest.fixture(scope="module")
def rich_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo packages plus a newer libgreet, a tool that needs it, and a virtual-package user."""
    extra = [Pkg("libgreet", "2.0"), hello_pkg("tool-b", "1.0", depends=("libgreet >=2",)),
             Pkg("needs-glibc", "1.0", depends=("__glibc >=2.17",)), Pkg("needs-mars", "1.0", depends=("__mars >=1",)),
             Pkg("picky", "1.0", constrains=("libgreet <2",))]
    return build_channel(tmp_path_factory.mktemp("rich"), [*demo_packages(), *extra])


@pytest.fixture
def locker(tmp_path: Path) -> Locker:
    settings = load_settings({"home": str(tmp_path / "home"), "socket": "/tmp/pvd-unused.sock", "engine": "rattler"},
                             environ={}, config_file=tmp_path / "none.toml")
    return Locker(RattlerEngine(settings), settings)


def urls(lock: Lock) -> list[str]:
    return sorted(p.url for p in lock.packages)


def solve(locker: Locker, spec: EnvSpec, locked: Lock | None = None) -> Lock:
    return asyncio.run(locker.solver.solve(spec, locked=locked.packages if locked else ()))


EDITS = [
    # (kind, before, after, the path it must take)
    ("add a present name", ["hello 1.*", "tool-a"], ["hello 1.*", "tool-a", "libgreet"], "keep"),
    ("tighten a met pin", ["hello", "tool-a"], ["hello >=2", "tool-a"], "keep"),
    ("remove a root", ["hello 1.*", "tool-a", "greet-data"], ["hello 1.*"], "keep"),
    ("add a new name", ["hello 1.*"], ["hello 1.*", "tool-a"], "extend"),
    ("add a name that needs an upgrade", ["hello 1.*"], ["hello 1.*", "tool-b"], "extend"),
    # picky constrains libgreet, which it does not reach: the restricted pool (locked records plus
    # what the new names reach) has no solution, and the whole channels are solved instead.
    ("add a name that constrains an old one", ["hello 1.*"], ["hello 1.*", "picky"], "extend"),
    ("break a pin", ["hello", "tool-a"], ["hello 1.*", "tool-a"], "solve"),
]


@pytest.mark.parametrize(("kind", "before", "after", "path"), EDITS, ids=[e[0] for e in EDITS])
def test_every_edit_kind_equals_a_solve_with_the_previous_lock_preferred(
        locker: Locker, rich_channel: Path, caplog: pytest.LogCaptureFixture,
        kind: str, before: list[str], after: list[str], path: str) -> None:
    previous = solve(locker, spec_on(rich_channel, *before))
    new = spec_on(rich_channel, *after)
    decided = relock(previous, new.dependencies, platform=locker.engine.platform,
                     channels=locker.solver.channel_urls(new), channel_priority="strict",
                     virtual_packages=locker.engine.virtual_packages())
    assert decided.kind == path, decided.reason
    with caplog.at_level(logging.DEBUG, logger="provisiond"):
        fast = asyncio.run(locker.relock(new, previous))
    assert urls(fast) == urls(solve(locker, new, locked=previous)), kind
    said = caplog.text
    assert ("without a solve" in said) == (path == "keep"), said
    assert ("restricted pool has no solution" in said) == ("constrains" in kind), said
    if "constrains" in kind:
        assert {p.name: p.version for p in fast.packages}["libgreet"] == "1.0"


def test_removing_a_root_prunes_its_closure(locker: Locker, rich_channel: Path) -> None:
    previous = solve(locker, spec_on(rich_channel, "tool-b", "greet-data"))
    assert {"tool-b", "libgreet", "greet-data"} <= {p.name for p in previous.packages}
    kept = asyncio.run(locker.relock(spec_on(rich_channel, "greet-data"), previous))
    assert [p.name for p in kept.packages] == ["greet-data"]


def test_a_previous_lock_that_no_longer_meets_this_machine_is_solved_again(locker: Locker, rich_channel: Path) -> None:
    """A lock made elsewhere: its virtual-package requirements are checked against this machine."""
    previous = solve(locker, spec_on(rich_channel, "hello"))
    needing = Lock(platform=previous.platform, channels=previous.channels, meta=previous.meta,
                   packages=tuple(p if p.name != "hello" else
                                  type(p)(**{**{f: getattr(p, f) for f in p.__slots__}, "depends": ("__mars >=1",)})
                                  for p in previous.packages))
    decided = relock(needing, ("hello",), platform=previous.platform, channels=list(previous.channels),
                     channel_priority="strict", virtual_packages=["__glibc=2.28=0", "__unix=0=0"])
    assert decided.kind == "solve" and "__mars" in decided.reason
    same = relock(previous, ("hello",), platform=previous.platform, channels=list(previous.channels),
                  channel_priority="strict", virtual_packages=["__glibc=2.28=0"])
    assert same.kind == "keep"
    other_channels = relock(previous, ("hello",), platform=previous.platform, channels=["file:///elsewhere/"],
                            channel_priority="strict", virtual_packages=[])
    flexible = relock(previous, ("hello",), platform=previous.platform, channels=list(previous.channels),
                      channel_priority="flexible", virtual_packages=[])
    assert other_channels.kind == flexible.kind == "solve"


@pytest.fixture(scope="module")
def order_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four records whose solve depends on input order (issue 13): b 2 needs a 1."""
    return build_channel(tmp_path_factory.mktemp("order"),
                         [Pkg("a", "1"), Pkg("a", "2"), Pkg("b", "1", depends=("a",)), Pkg("b", "2", depends=("a 1.*",))])


def test_two_files_differing_only_in_order_get_the_same_env(locker: Locker, order_channel: Path) -> None:
    async def raw(specs: list[str]) -> dict[str, str]:
        records = await rattler.solve([rattler.Channel(order_channel.as_uri())], specs,
                                      platforms=[locker.engine.platform, "noarch"], timestamp_policy="allow-missing")
        return {r.name.normalized: str(r.version) for r in records}
    # The premise: rattler answers differently for the two orders (else this test proves nothing).
    ab, ba = asyncio.run(raw(["a", "b"])), asyncio.run(raw(["b", "a"]))
    assert ab != ba, (ab, ba)
    first = asyncio.run(locker.engine.solve(spec_on(order_channel, "a", "b")))
    second = asyncio.run(locker.engine.solve(spec_on(order_channel, "b", "a")))
    assert first.env_key == second.env_key
    assert {p.name: p.version for p in first.packages} == ab  # the canonical (sorted) order's answer


def test_other_channels_solve_with_nothing_preferred(locker: Locker, rich_channel: Path, channel: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A lock from another channel is not preferred: its packages must not leak into the new env."""
    previous = solve(locker, spec_on(rich_channel, "hello 1.*"))
    with caplog.at_level(logging.INFO, logger="provisiond.daemon.locking"):
        moved = asyncio.run(locker.relock(spec_on(channel, "hello 1.*"), previous))
    assert all(p.url.startswith(channel.as_uri()) for p in moved.packages)
    assert "solved (the channels changed)" in caplog.text
