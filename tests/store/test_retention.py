"""Bounded growth: old build rows with their logs and old solve rows go; what names point at stays."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provisiond.config.settings import Paths, Settings, load_settings
from provisiond.domain.errors import ConfigError
from provisiond.store import retention
from provisiond.store.store import Store
from tests.store.test_store import LOCK


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(home=tmp_path / "store", socket=tmp_path / "s.sock", state=tmp_path / "state")


def finished_build(store: Store, name: str | None = None, status: str = "succeeded") -> int:
    build = store.start_build(LOCK.env_key, name)
    Path(build.log).write_text(f"build {build.id}\n")
    if status != "running":
        store.finish_build(build.id, status)
    return build.id


def test_builds_over_the_limit_go_with_their_logs_but_not_those_in_use(paths: Paths) -> None:
    settings = Settings(paths=paths, keep_builds=3)
    with Store.open(paths) as store:
        running = finished_build(store, status="running")
        ids = [finished_build(store, status="failed" if i % 2 else "succeeded") for i in range(8)]
        store.add_name("nlp", "project", "/p/nlp")
        store.update_name("nlp", build_id=ids[1])  # `provisionctl log nlp` shows this one
        logs = {b.id: Path(b.log) for b in store.list_builds(limit=100)}

        pruned = retention.prune(store, settings)

        kept = {b.id for b in store.list_builds(limit=100)}
        assert kept == {running, ids[1], *ids[-3:]}
        assert pruned.builds == pruned.logs == 9 - len(kept)
        assert {i for i, log in logs.items() if log.exists()} == kept
        assert retention.prune(store, settings) == retention.Pruned()  # nothing more to do


def test_old_and_surplus_solves_go_but_not_a_names_solve(paths: Paths) -> None:
    settings = Settings(paths=paths, keep_solves=2, keep_solves_days=1, solve_ttl=60)
    day = 86400
    with Store.open(paths) as store:
        now = time.time()
        for key, age in (("old-used", 9 * day), ("old", 9 * day), ("new-1", 10), ("new-2", 20), ("new-3", 30)):
            store.db.execute("INSERT INTO solves VALUES (?,?,?)", (key, LOCK.to_json(), now - age))
        store.add_name("tools", "file", "/x/env.yml")
        store.update_name("tools", spec_key="old-used")
        assert retention.prune(store, settings).solves == 2
        assert {r[0] for r in store.db.execute("SELECT spec_key FROM solves")} == {"old-used", "new-1", "new-2"}


def test_a_solve_younger_than_solve_ttl_is_never_pruned_by_age(paths: Paths) -> None:
    settings = Settings(paths=paths, keep_solves_days=0, solve_ttl=3600)
    with Store.open(paths) as store:
        store.db.execute("INSERT INTO solves VALUES ('fresh', ?, ?)", (LOCK.to_json(), time.time() - 60))
        assert retention.prune(store, settings).solves == 0


def test_start_up_removes_logs_no_row_names(paths: Paths) -> None:
    with Store.open(paths) as store:
        kept = finished_build(store)
        orphan = paths.logs / "build-999.log"
        orphan.write_text("from a registry that is gone\n")
        other = paths.logs / "notes.txt"
        other.write_text("not ours\n")
        assert retention.prune(store, Settings(paths=paths)).logs == 0  # after a build: rows only
        assert retention.prune(store, Settings(paths=paths), orphan_logs=True).logs == 1
        assert not orphan.exists() and other.exists() and (paths.logs / f"build-{kept}.log").exists()


def test_retention_settings_load_and_are_checked(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    s = load_settings({}, {"PROVISIOND_KEEP_BUILDS": "5", "PROVISIOND_KEEP_SOLVES_DAYS": "2.5"}, none)
    assert (s.keep_builds, s.keep_solves, s.keep_solves_days) == (5, 1000, 2.5)
    assert s.to_wire()["keep_builds"] == 5
    with pytest.raises(ConfigError, match="keep_solves=-1"):
        load_settings({}, {"PROVISIOND_KEEP_SOLVES": "-1"}, none)
