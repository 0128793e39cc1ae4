"""A solve in a restricted pool, tried before the whole channels when a spec adds names to a lock
(``RattlerEngine.solve`` with ``locked`` and ``extend``; docs/store.md, "The restricted pool")."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence

import rattler
import rattler.exceptions as rx

log = logging.getLogger(__name__)


async def solve_restricted(gateway: rattler.Gateway, channels: list[rattler.Channel], subdirs: list[str],
                           specs: list[rattler.MatchSpec], locked: Sequence[tuple[str, rattler.RepoDataRecord]],
                           extend: Sequence[str], virtual: list[rattler.GenericVirtualPackage], deadline: float
                           ) -> list[rattler.RepoDataRecord] | None:
    """Solve in a pool of the ``locked`` records (name, record) plus every record reachable from
    ``extend`` (all their versions, from the first channel that has each name: strict priority);
    None when it has no solution (a new package constrains an old one away: the caller solves in full).

    A previous package no new name reaches has only its locked record: a solve of the whole
    channels that prefers it keeps it too, since nothing new depends on it. Measured 7-15x
    faster than that solve (benchmarks/README.md).
    """
    reached = await gateway.query(channels, subdirs, list(extend), recursive=True)  # type: ignore[arg-type]
    pool: dict[str, list[rattler.RepoDataRecord]] = {}
    for per_channel in reached:
        first: dict[str, list[rattler.RepoDataRecord]] = {}
        for record in per_channel:
            first.setdefault(record.name.normalized, []).append(record)
        for name, records in first.items():
            pool.setdefault(name, records)
    for name, record in locked:
        pool.setdefault(name, [record])
    try:
        return await rattler.solve(
            sources=[_Pool(pool)], specs=specs, platforms=subdirs,  # type: ignore[arg-type]  # as in RattlerEngine.solve
            locked_packages=[record for _name, record in locked],
            virtual_packages=virtual, timestamp_policy="allow-missing",
            timeout=datetime.timedelta(seconds=max(0.001, deadline - time.monotonic())))
    except rx.SolverError:
        log.debug("the restricted pool has no solution: solving with the whole channels")
        return None


class _Pool:
    """A rattler RepoDataSource serving a fixed set of records."""

    def __init__(self, records: dict[str, list[rattler.RepoDataRecord]]) -> None:
        self.records = records

    async def fetch_package_records(self, platform: rattler.Subdir, name: rattler.PackageName
                                    ) -> list[rattler.RepoDataRecord]:
        return [r for r in self.records.get(name.normalized, ()) if r.subdir == str(platform)]

    def package_names(self, platform: rattler.Subdir) -> list[str]:
        return list(self.records)
