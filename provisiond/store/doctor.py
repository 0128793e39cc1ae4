"""``provisionctl doctor``: check a store without the daemon, and rebuild a broken registry from the disk.

It holds the store's flock (``Store.held``) so it never runs beside a live daemon. The registry is
derived data except for consent and history: envs come back from each prefix's marker and
``locks/<env_key>.json`` (what the start-up sweep already adopts), projects and their names from
the per-user activation files (``<state>/projects/<dir>/.provisiond/activate.json``: name, project,
env_key), other names from the store's ``activation/names/<name>/env``. Lost for good: the
allow-list (consent is asked again: ``provisionctl allow``), build history, the solve cache, and
the source file of an env made with ``create -f`` (it comes back as a snapshot of its lock).
The broken file is moved aside (``state.db.broken-<time>``), never deleted. docs/operations.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from provisiond.config.layout import NAME_TARGET, PROJECT_LEAF
from provisiond.config.layout import NAMES as NAMES_DIR
from provisiond.config.settings import Paths
from provisiond.domain.errors import EnvNotFoundError, StoreBusyError
from provisiond.store import registry
from provisiond.store.store import MARKER, Store

REPAIR = "provisionctl doctor --repair"


def doctor(paths: Paths, *, repair: bool = False) -> dict[str, Any]:
    """Check the store at ``paths`` (and with ``repair``, fix what can be fixed); a report for render."""
    if not paths.home.is_dir():
        raise EnvNotFoundError(f"no store at {paths.home}", hint="name the store with --home or PROVISIOND_HOME")
    try:
        with Store.held(paths) as store:
            state = _registry_state(paths)
            problems = _problems(paths, state)
            repaired: dict[str, Any] | None = None
            if repair and any(p["repairable"] for p in problems):
                repaired = _repair(store, state)
                state = _registry_state(paths)
                problems = _problems(paths, state)
    except StoreBusyError as exc:
        raise StoreBusyError(exc.message.replace("already serves", "serves"),
                             hint="doctor works on a store no daemon serves: stop it first "
                                  "(systemctl --user stop provisiond.socket provisiond)") from None
    return {"store": str(paths.home), "registry": state, "problems": problems, "repaired": repaired,
            "ok": not problems}


# -- checks ------------------------------------------------------------------------------------

def _registry_state(paths: Paths) -> dict[str, Any]:
    """What the registry file is: missing, empty, unreadable, corrupt, too new, or ok (+ its counts)."""
    state: dict[str, Any] = {"path": str(paths.db), "status": "ok", "version": None, "detail": None}
    try:
        size = paths.db.stat().st_size
    except FileNotFoundError:
        return {**state, "status": "missing"}
    if size == 0:
        return {**state, "status": "empty"}
    # Read-write, though it only reads: a read-only open fails on a WAL file without its -shm, and
    # "unreadable" would move a good registry aside. The flock keeps any daemon away meanwhile.
    db = registry.connect(paths.db)
    try:
        result = [row[0] for row in db.execute("PRAGMA integrity_check")]
        version = int(db.execute("PRAGMA user_version").fetchone()[0]) or registry.unversioned(db)
        state["version"] = version
        if result != ["ok"]:
            return {**state, "status": "corrupt", "detail": "; ".join(result[:5])}
        if version > registry.VERSION:
            return {**state, "status": "too-new", "detail": f"schema version {version}, this provisiond knows up "
                                                               f"to {registry.VERSION}: upgrade provisiond"}
        if version >= 1:
            state["envs"] = db.execute("SELECT count(*) FROM envs").fetchone()[0]
            state["names"] = db.execute("SELECT count(*) FROM names").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return {**state, "status": "unreadable", "detail": str(exc)}
    finally:
        db.close()
    return state


def _problems(paths: Paths, state: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def problem(kind: str, path: Path | str, message: str, repairable: bool = True) -> None:
        out.append({"kind": kind, "path": str(path), "message": message, "repairable": repairable})

    status = state["status"]
    if status == "too-new":
        problem("registry-too-new", paths.db, state["detail"], repairable=False)
        return out  # a newer provisiond's store: read nothing more into it
    if status in ("empty", "unreadable", "corrupt") or (status == "missing" and registry.has_envs(paths)):
        why = {"empty": "is empty (0 bytes)", "missing": "is missing (the envs are still on disk)",
               "unreadable": f"cannot be read ({state['detail']})",
               "corrupt": f"fails PRAGMA integrity_check ({state['detail']})"}[status]
        problem(f"registry-{status}", paths.db, f"the registry {why}; --repair moves it aside and rebuilds it "
                                                "from the envs, locks and activation files on disk")
    rows: dict[str, str] = {}
    if status == "ok" and state.get("version"):
        db = registry.connect(paths.db)
        try:
            rows = dict(db.execute("SELECT env_key, prefix FROM envs").fetchall())
        finally:
            db.close()
    for env_key, prefix in rows.items():
        marker = _marker(Path(prefix))
        if marker != env_key:
            what = "no such directory" if not Path(prefix).is_dir() else \
                "no completion marker" if marker is None else f"its marker names env {marker[:16]}"
            problem("env-incomplete", prefix, f"env {env_key[:16]}: {what}; --repair forgets the row "
                                              "(the next warm builds it again)")
        elif not (paths.locks / f"{env_key}.json").is_file():
            problem("env-without-lock", paths.locks / f"{env_key}.json",
                    f"env {env_key[:16]} has no lock file: export and rebuild cannot work; "
                    f"remove it (provisionctl remove) and warm its names again", repairable=False)
    registered = set(rows.values())
    if status == "ok":
        for entry in sorted(_prefixes(paths)):
            marker = _marker(entry)
            if marker is None:
                problem("prefix-unmarked", entry, "a prefix without its completion marker (an interrupted build); "
                                                  "--repair removes it")
            elif str(entry) not in registered:
                problem("prefix-unregistered", entry, f"env {marker[:16]} is published but has no registry row; "
                                                      "--repair adds it")
    if paths.building.is_dir():
        for entry in sorted(paths.building.iterdir()):
            problem("building-leftover", entry, "left by an interrupted build; --repair removes it")
    return out


def _prefixes(paths: Paths) -> list[Path]:
    try:
        return [e for e in paths.envs.iterdir() if e.is_dir() and e != paths.building]
    except FileNotFoundError:
        return []


def _marker(prefix: Path) -> str | None:
    try:
        return str(json.loads((prefix / MARKER).read_text())["env_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- repair ------------------------------------------------------------------------------------

def _repair(store: Store, state: dict[str, Any]) -> dict[str, Any]:
    paths = store.paths
    moved: list[str] = []
    rebuilt = state["status"] != "ok"
    if rebuilt:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):  # the WAL belongs to the broken file: never replay it into a new one
            source = Path(f"{paths.db}{suffix}")
            if source.exists():
                target = source.with_name(f"{source.name}.broken-{stamp}")
                os.rename(source, target)
                moved.append(str(target))
    store.load()  # a new registry (or the old, migrated); the sweep adopts marked prefixes, drops the rest
    forgotten = []
    for row in store.list_envs():
        if _marker(Path(row["prefix"])) != row["env_key"]:
            store.db.execute("DELETE FROM envs WHERE env_key=?", (row["env_key"],))
            forgotten.append(row["env_key"])
    names = _restore_names(store) if rebuilt else {"projects": [], "names": [], "skipped": []}
    return {"moved_aside": moved, "envs": len(store.list_envs()), "forgotten_envs": forgotten, **names}


def _restore_names(store: Store) -> dict[str, list[str]]:
    """Projects from the per-user activation files, then other names from the store's name activation."""
    paths = store.paths
    projects, names, skipped = [], [], []
    envs = {row["env_key"] for row in store.list_envs()}

    def add(name: str, kind: str, source: str | None, env_key: str | None, status: str) -> bool:
        if store.find_name(name) is not None or (kind == "project" and store.find_project(str(source))):
            skipped.append(f"{name} ({source or env_key})")
            return False
        store.add_name(name, kind, source)
        ready = env_key in envs
        store.update_name(name, env_key=env_key if ready else None, error=None,
                          status=status if ready or status == "gone" else "new")
        return True

    root = paths.projects_state
    for file in sorted(root.glob(f"**/{PROJECT_LEAF}/activate.json")) if root.is_dir() else ():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            name, project, env_key = str(data["name"]), str(data["project"]), str(data["env_key"])
        except (OSError, ValueError, KeyError, TypeError):
            skipped.append(str(file))
            continue
        if "/" + str(file.parent.parent.relative_to(root)) != project:
            skipped.append(str(file))  # not where that project's activation lives: copied or stale
            continue
        if add(name, "project", project, env_key, "ready" if Path(project).is_dir() else "gone"):
            projects.append(name)
    directory = paths.activation / NAMES_DIR
    for target in sorted(directory.glob(f"*/{NAME_TARGET}")) if directory.is_dir() else ():
        try:
            fields = dict(line.split("=", 1) for line in target.read_text(encoding="utf-8").splitlines() if line)
            env_key = fields["env_key"]
        except (OSError, ValueError, KeyError):
            skipped.append(str(target))
            continue
        name = target.parent.name
        if store.find_name(name) is not None:
            continue  # a project's name: restored above
        # Its source file (create -f) is not on disk anywhere: a snapshot of its lock, like a lockfile env.
        if add(name, "lock", None, env_key, "ready"):
            names.append(name)
    return {"projects": projects, "names": names, "skipped": skipped}
