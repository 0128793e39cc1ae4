"""bench_core's rows for project locks (issue 12) and re-locks by edit kind (issue 13).

- a watched project with a current conda-lock.yml made ready on a fresh home (no solve), against
  `provisionctl create -f` of the same lock on another fresh home;
- `provisionctl lock` for 4 platforms (whole process), against 4 rattler.solve calls in a fresh process;
- the re-lock after each kind of edit (the `lock` route of a project with a previous lock), against
  rattler.solve of the edited file in a fresh process.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import rattler
from common import CTL, ENV, BenchDaemon, med

from provisiond.testing.channel import write_repodata_only_channel

LOCK_PLATFORMS = ["linux-64", "osx-64", "osx-arm64", "win-64"]
# 4 solves in one new process, one per platform, each with that platform's virtual packages (as the
# daemon's defaults for another platform: engines/virtual.py): timed as a whole process.
FRESH_SOLVE_PLATFORMS = r"""
import asyncio, json, os, sys
import rattler
VIRTUAL = {"linux-64": ["__linux=4.18=0", "__glibc=2.28=0", "__unix=0=0", "__archspec=1=x86_64"],
           "osx-64": ["__osx=10.15=0", "__unix=0=0", "__archspec=1=x86_64"],
           "osx-arm64": ["__osx=13.0=0", "__unix=0=0", "__archspec=1=arm64"], "win-64": ["__win=0=0", "__archspec=1=x86_64"]}
def generic(text):
    n, v, b = text.split("=")
    return rattler.GenericVirtualPackage(rattler.PackageName(n), rattler.Version(v), rattler.BuildString(b))
async def go():
    gateway, n = rattler.Gateway(cache_dir=sys.argv[1]), 0
    for platform in VIRTUAL:
        records = await rattler.solve(sources=[rattler.Channel(sys.argv[2])], specs=sys.argv[3:], gateway=gateway,
                                      platforms=[platform, "noarch"], virtual_packages=[generic(v) for v in VIRTUAL[platform]],
                                      timestamp_policy="allow-missing")
        n += len(records)
    return n
print(json.dumps(asyncio.run(go())))
sys.stdout.flush()
os._exit(0)  # rattler's threads may abort the interpreter's finalization (as FRESH_SOLVE does)
"""
STEP = r"(re-locked .*? without a solve: .*?\(([\d.]+) ms\)|: (solved[^\n]*?) for \S+, \d+ packages in ([\d.]+) ms)"


def since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def write_env(directory: Path, channel: Path, deps: list[str], name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", "channels:", f"  - {channel.as_uri()}", "dependencies:", *(f"  - {d}" for d in deps)]
    (directory / "environment.yml").write_text("\n".join(lines) + "\n")
    return directory


def bench_locked_project(d: BenchDaemon, ws: Path, channel: Path, names: list[str], reps: int) -> dict[str, Any]:
    """Each round, two fresh homes: one watches a project with a current lock, one `create -f`s that lock."""
    project = write_env(ws / "locked-project", channel, names, "bench-locked")
    d.client.post("/v1/lock", {"path": str(project)})
    lock_file = project / "conda-lock.yml"
    watch_ms, create_ms, solved, keys = [], [], 0, set()
    for k in range(reps):
        for who in (("watch", "create") if k % 2 == 0 else ("create", "watch")):
            work = ws / f"fresh-{k}-{who}"
            work.mkdir()
            with BenchDaemon(work, work / "d.sock") as fresh:
                fresh.start()
                started = time.perf_counter()
                if who == "watch":
                    name = fresh.client.post("/v1/projects", {"path": str(project), "warm": False, "allow": True})["name"]
                    view = fresh.client.post(f"/v1/envs/{name}/warm", {})
                    watch_ms.append(since(started))
                    solved += len(re.findall(r"locked .*?: \d+ packages in|: solved", fresh.log.read_text()))
                else:
                    view = fresh.client.post("/v1/envs", {"file": str(lock_file), "name": "copy"})
                    create_ms.append(since(started))
                keys.add(view["env_key"])
                fresh.stop()
            shutil.rmtree(work, ignore_errors=True)
    return {"rounds": reps, "packages": len(names), "watch_ms": med(watch_ms), "create_ms": med(create_ms),
            "solves_on_fresh_homes": solved, "same_env_key": len(keys) == 1}


def bench_lock_platforms(d: BenchDaemon, ws: Path, n_records: int, reps: int) -> dict[str, Any]:
    """`provisionctl lock` with 4 --platform of a project (whole process; no previous lock) vs 4 solves in a new process."""
    channel = ws / "channel-4"
    for platform in LOCK_PLATFORMS:
        write_repodata_only_channel(channel, n_records, platform=platform)
    repodata = json.loads((channel / "linux-64" / "repodata.json").read_text())
    n_names = len({r["name"] for key in ("packages", "packages.conda") for r in repodata[key].values()})
    roots = [f"syn-{int(n_names * f):05d}" for f in (0.08, 0.06, 0.04, 0.02)]  # bench_core's "typical" roots
    project = write_env(ws / "lock-4", channel, roots, "bench-lock-4")
    argv = [*CTL, "--socket", str(d.socket), "lock", str(project), *(f"--platform={p}" for p in LOCK_PLATFORMS)]
    subprocess.run(argv, check=True, env=ENV, stdout=subprocess.DEVNULL)  # loads the 4 subdirs once
    ours, fresh = [], []
    for k in range(reps):
        for who in (("ours", "fresh") if k % 2 == 0 else ("fresh", "ours")):
            (project / "conda-lock.yml").unlink(missing_ok=True)
            started = time.perf_counter()
            if who == "ours":
                subprocess.run(argv, check=True, env=ENV, stdout=subprocess.DEVNULL)
                ours.append(since(started))
            else:
                subprocess.run([sys.executable, "-c", FRESH_SOLVE_PLATFORMS, str(ws / "fresh-cache-4"),
                                channel.as_uri(), *roots], check=True, env=ENV, stdout=subprocess.DEVNULL)
                fresh.append(since(started))
    return {"rounds": reps, "roots": roots, "records_per_platform": n_records, "lock_ms": med(ours),
            "fresh_ms": med(fresh)}


def _resolution(channel: Path, roots: list[str]) -> dict[str, str]:
    async def solve() -> list[rattler.RepoDataRecord]:
        return await rattler.solve(sources=[rattler.Channel(channel.as_uri())], specs=roots,
                                   platforms=[str(rattler.Subdir.current()), "noarch"],
                                   timestamp_policy="allow-missing")
    return {r.name.normalized: str(r.version) for r in asyncio.run(solve())}


def edits(channel: Path, roots: list[str]) -> list[tuple[str, list[str]]]:
    """The five edit kinds of issue 13, from a project whose dependencies are ``roots``."""
    resolved = _resolution(channel, roots)
    present = next(n for n in sorted(resolved) if n not in roots)
    new = next(f"syn-{k:05d}" for k in range(1, 10_000) if f"syn-{k:05d}" not in resolved)
    first = roots[0]
    return [("add a present name", [*roots, present]),
            ("tighten a met pin", [f"{first} =={resolved[first]}", *roots[1:]]),
            ("remove a root", roots[:-1]),
            ("add a new name", [*roots, new]),
            ("break a pin", [f"{first} !={resolved[first]}", *roots[1:]])]


def bench_relock_kinds(d: BenchDaemon, ws: Path, channel: Path, roots: list[str], reps: int,
                       fresh_solve: str, tag: str) -> dict[str, Any]:
    """The `lock` route after each edit kind (the previous lock restored first) vs a fresh-process solve."""
    project = write_env(ws / f"relock-{tag}", channel, roots, f"bench-relock-{tag}")
    d.client.post("/v1/lock", {"path": str(project)})
    previous = (project / "conda-lock.yml").read_text()
    rows = []
    for label, deps in edits(channel, roots):
        ours, steps, fresh, paths = [], [], [], set()
        for _ in range(reps):
            (project / "conda-lock.yml").write_text(previous)
            write_env(project, channel, deps, f"bench-relock-{tag}")
            mark = len(d.log.read_text())
            started = time.perf_counter()
            d.client.post("/v1/lock", {"path": str(project)})
            ours.append(since(started))
            found = re.findall(STEP, d.log.read_text()[mark:])
            if found:
                _line, kept_ms, how, solved_ms = found[-1]
                paths.add("kept (no solve)" if kept_ms else re.sub(r" \(.*", "", how))
                steps.append(float(kept_ms or solved_ms))
            out = subprocess.run([sys.executable, "-c", fresh_solve, str(ws / "fresh-cache"), channel.as_uri(), *deps],
                                 capture_output=True, text=True, check=True, env=ENV)
            fresh.append(json.loads(out.stdout)[0])
        rows.append({"kind": label, "path": ", ".join(sorted(paths)), "lock_route_ms": med(ours, 2),
                     "relock_step_ms": med(steps, 2), "fresh_solve_ms": med(fresh)})
    return {"tag": tag, "roots": roots, "rounds": reps, "kinds": rows}
