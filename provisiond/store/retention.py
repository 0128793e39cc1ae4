"""Bounded growth of the registry: old build rows with their logs, and old solve-cache rows.

Only builds and solves add rows, so pruning runs where they happen: once at start-up (which also
removes log files no row names, e.g. after ``doctor --repair`` restarted the build ids), and
after each build ends (``Builder``), when at most a row or two are over the limit: two indexed
DELETEs and an unlink, well under a millisecond. No timer task: nothing grows while nothing
builds. What a name points at is never pruned: its build (``names.build_id``, for
``provisionctl log NAME``) and its solve (``names.spec_key``, the warm fast path). Nor is a
running build. Settings: ``keep_builds``, ``keep_solves``, ``keep_solves_days`` (docs/configuration.md).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from provisiond.config.settings import Settings
from provisiond.store.store import Store

log = logging.getLogger(__name__)

_LOG = re.compile(r"build-(\d+)\.log")


@dataclass(frozen=True, slots=True)
class Pruned:
    builds: int = 0
    logs: int = 0
    solves: int = 0


def prune(store: Store, settings: Settings, *, orphan_logs: bool = False) -> Pruned:
    """Delete the build rows (and their logs) and solve rows over the limits; see the module doc."""
    db = store.db
    with store.transaction():
        doomed = db.execute(
            "SELECT id, log FROM builds WHERE status != 'running'"
            " AND id NOT IN (SELECT build_id FROM names WHERE build_id IS NOT NULL)"
            " AND id NOT IN (SELECT id FROM builds ORDER BY id DESC LIMIT ?)", (settings.keep_builds,)).fetchall()
        db.executemany("DELETE FROM builds WHERE id=?", [(row["id"],) for row in doomed])
        # A solve younger than solve_ttl is still a cache hit: never prune it by age.
        cutoff = time.time() - max(settings.keep_solves_days * 86400, settings.solve_ttl)
        solves = db.execute(
            "DELETE FROM solves WHERE spec_key NOT IN (SELECT spec_key FROM names WHERE spec_key IS NOT NULL)"
            " AND (solved_at < ? OR spec_key NOT IN (SELECT spec_key FROM solves ORDER BY solved_at DESC LIMIT ?))",
            (cutoff, settings.keep_solves)).rowcount
    # After the commit: a crash in between leaves log files no row names, which the next start removes.
    logs = sum(_unlink(store, Path(row["log"])) for row in doomed if row["log"])
    if orphan_logs:
        known = {row["id"] for row in db.execute("SELECT id FROM builds")}
        for path in store.paths.logs.glob("build-*.log"):
            match = _LOG.fullmatch(path.name)
            if match and int(match.group(1)) not in known:
                logs += _unlink(store, path)
    pruned = Pruned(builds=len(doomed), logs=logs, solves=solves)
    if pruned != Pruned():
        log.info("pruned %d build rows, %d build logs and %d cached solves", pruned.builds, pruned.logs,
                 pruned.solves)
    return pruned


def _unlink(store: Store, path: Path) -> int:
    if path.parent != store.paths.logs:  # a row names its log; never follow it out of logs/
        return 0
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("cannot remove the build log %s: %s", path, exc)
        return 0
    return 1
