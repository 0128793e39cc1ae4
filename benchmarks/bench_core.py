#!/usr/bin/env python3
"""Issue 2 benchmark: provisiond vs the bare tools it wraps, measured in one run on generated channels.

    .venv/bin/python benchmarks/bench_core.py [--quick] [--tmp DIR] [--json] [--keep]

Starts its own provisiond (``python -m provisiond``) on a private store, state dir and socket under a
fresh work dir, and removes it all at the end. benchmarks/README.md says what each row measures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rattler
from bench_engines import bench_engines
from common import CTL, ENV, BenchDaemon, filesystem, med, parse_args, progress, run, workspace
from lock_rows import bench_lock_platforms, bench_locked_project, bench_relock_kinds

from provisiond.domain.exports import explicit
from provisiond.domain.lock import Lock
from provisiond.engines.rattler import record_of
from provisiond.testing.channel import (
    Pkg,
    build_channel,
    build_package,
    generated_packages,
    write_repodata_only_channel,
)

PLATFORMS = [str(rattler.Subdir.current()), "noarch"]
SOLVED = r"(?:locked .*?: \d+ packages in|without a solve: .*?\() ?([\d.]+) ms"  # the daemon's line per (re-)lock
# The build log's line for the durability step: syncfs of the prefix, then with the fsyncs of the lock
# file, the marker and the rename.
SYNCED = r"synced \S+ to disk \((\w+)\) in [\d.]+ ms; with the lock file, marker and rename in ([\d.]+) ms"

# The fresh-process solve: timed inside, from before the Gateway exists to the end of the solve.
FRESH_SOLVE = r"""
import asyncio, json, os, sys, time
import rattler
async def go():
    t = time.perf_counter()
    records = await rattler.solve(
        sources=[rattler.Channel(sys.argv[2])], specs=sys.argv[3:], gateway=rattler.Gateway(cache_dir=sys.argv[1]),
        platforms=[str(rattler.Subdir.current()), "noarch"], virtual_packages=rattler.VirtualPackage.detect(),
        channel_priority=rattler.ChannelPriority.Strict, timestamp_policy="allow-missing")
    return (time.perf_counter() - t) * 1000, len(records)
print(json.dumps(asyncio.run(go())))
sys.stdout.flush()
os._exit(0)
"""


def since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def write_env(directory: Path, channel: Path, deps: list[str], name: str, comment: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"# {comment}"] if comment else []
    lines += [f"name: {name}", "channels:", f"  - {channel.as_uri()}", "dependencies:", *(f"  - {d}" for d in deps)]
    (directory / "environment.yml").write_text("\n".join(lines) + "\n")
    return directory


class Daemon(BenchDaemon):
    """The daemon in ``work``, its store in work/home; its INFO log gives the solve times."""

    def __init__(self, work: Path) -> None:
        super().__init__(work, work / "d.sock", home="home")

    def add(self, project: Path) -> str:
        return str(self.client.post("/v1/projects", {"path": str(project), "warm": False, "allow": True})["name"])

    def warm(self, name: str) -> tuple[float, dict]:
        started = time.perf_counter()
        view = self.client.post(f"/v1/envs/{name}/warm", {})
        return since(started), view

    def last_solve_ms(self) -> float:
        assert self.log is not None, "the daemon was never started"
        found = re.findall(SOLVED, self.log.read_text())
        return float(found[-1]) if found else float("nan")


def bench_build(d: Daemon, ws: Path, channel: Path, pkgs: list[Pkg], reps: int) -> dict:
    """A new env through the daemon vs bare rattler.install of the same records, from the same warm cache.

    The daemon gets the records as an @EXPLICIT lock (`provisionctl create -f`: no solve), so both
    sides install exactly the same thing; a second series warms an edited spec (solve + build).
    """
    names = [p.name for p in pkgs]
    # Warm the package cache (and make the ready env of rows 3 and 4): an env of every package.
    d.add(write_env(ws / "all", channel, names, "bench-all"))
    d.warm("bench-all")
    full = Lock.from_wire(d.client.get("/v1/envs/bench-all/lock"))
    # A leaf is a package nothing depends on: "all but leaf k" is a new env_key with one fewer record.
    leaves = [p.name for p in pkgs if not any(p.name == dep.split()[0] for q in pkgs for dep in q.depends)]
    assert len(leaves) >= 2 * reps, f"{len(leaves)} leaves: too few for {reps} rounds"
    lock_ms, build_ms, warm_ms, solve_ms, bare_ms, sync_ms, how = [], [], [], [], [], [], set()
    for k in range(reps):
        packages = [p for p in full.packages if p.name != leaves[k]]
        lockfile = ws / "locks" / f"lock-{k}.txt"
        lockfile.parent.mkdir(exist_ok=True)
        lockfile.write_text(explicit(Lock(platform=full.platform, packages=tuple(packages), channels=full.channels)))
        records = [record_of(p) for p in packages]
        spec_leaf = leaves[reps + k]
        project = d.add(write_env(ws / f"build-{k}", channel, [n for n in names if n != spec_leaf],
                                  f"bench-build-{k}"))

        async def bare() -> None:
            started = time.perf_counter()
            await rattler.install(records, target_prefix=ws / "bare" / str(k), cache_dir=d.home / "pkgs",
                                  show_progress=False, execute_link_scripts=False)
            bare_ms.append(since(started))

        def daemon() -> None:
            started = time.perf_counter()
            view = d.client.post("/v1/envs", {"file": str(lockfile), "name": f"bench-lock-{k}"})
            lock_ms.append(since(started))
            build = d.client.get(f"/v1/builds/{view['build_id']}")  # its row: started → published → finished
            build_ms.append((build["finished"] - build["started"]) * 1000)
            [(kind, synced)] = re.findall(SYNCED, d.client.get(f"/v1/builds/{view['build_id']}/log"))
            how.add(kind)
            sync_ms.append(float(synced))
            built = Lock.from_wire(d.client.get(f"/v1/envs/bench-lock-{k}/lock"))
            assert {p.url for p in built.packages} == {p.url for p in packages}, "the daemon built other records"
            elapsed, _ = d.warm(project)
            warm_ms.append(elapsed)
            solve_ms.append(d.last_solve_ms())

        for step in ((daemon, lambda: asyncio.run(bare())) if k % 2 == 0 else (lambda: asyncio.run(bare()), daemon)):
            step()  # alternate who goes first
    files = sum(len(f) for _, _, f in os.walk(ws / "bare" / "0"))
    return {"packages": len(full.packages) - 1, "files_per_env": files, "rounds": len(lock_ms),
            "daemon_ms": med(lock_ms), "daemon_build_ms": med(build_ms), "daemon_warm_ms": med(warm_ms),
            "daemon_solve_ms": med(solve_ms), "bare_install_ms": med(bare_ms), "daemon_sync_ms": med(sync_ms),
            "sync": "+".join(sorted(how))}


def make_installable(channel: Path, fractions: tuple[float, ...]) -> tuple[list[str], list[rattler.RepoDataRecord], int]:
    """Pick roots at ``fractions`` of the channel's names (a name depends only on lower-numbered
    names, so high fractions reach most of the channel, low ones a little) and solve them once; build real archives for exactly
    those records and patch their hashes into repodata.json, so the daemon can build that one env.
    Returns the roots, the records and how many records the roots reach (all a solver must consider)."""
    path = channel / PLATFORMS[0] / "repodata.json"
    repodata = json.loads(path.read_text())
    n_names = len({r["name"] for key in ("packages", "packages.conda") for r in repodata[key].values()})
    roots = [f"syn-{int(n_names * f):05d}" for f in fractions]

    async def solve() -> tuple[list[rattler.RepoDataRecord], int]:
        gateway, sources = rattler.Gateway(), [rattler.Channel(channel.as_uri())]
        reached = await gateway.query(sources, PLATFORMS, roots, recursive=True)
        return await rattler.solve(sources=sources, specs=roots, gateway=gateway, platforms=PLATFORMS,
                                   timestamp_policy="allow-missing"), sum(len(r) for r in reached)

    records, reachable = asyncio.run(solve())
    for r in records:
        ext = ".conda" if r.file_name.endswith(".conda") else ".tar.bz2"
        pkg = Pkg(r.name.normalized, str(r.version), build=str(r.build), build_number=r.build_number,
                  depends=tuple(r.depends), files={f"share/{r.name.normalized}/README": r.file_name}, format=ext)
        data = build_package(pkg, channel / r.subdir, r.subdir).read_bytes()
        entry = repodata["packages.conda" if ext == ".conda" else "packages"][r.file_name]
        entry.update(sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest(), size=len(data))
    path.write_text(json.dumps(repodata, separators=(",", ":")))
    return roots, records, reachable


DEEP = (0.9, 0.68, 0.45, 0.23)
SHALLOW = (0.08, 0.06, 0.04, 0.02)


def bench_resolve(d: Daemon, ws: Path, channel: Path, reps: int, fractions: tuple[float, ...], tag: str) -> dict:
    """Warm after an edit (new spec_key, same resolution: an already-built env) vs rattler.solve in a new process."""
    roots, records, reachable = make_installable(channel, fractions)
    extras = sorted(r.name.normalized for r in records if r.name.normalized not in roots)[:reps]
    project = d.add(write_env(ws / f"resolve-{tag}", channel, roots, f"bench-resolve-{tag}"))
    _, base = d.warm(project)  # the first solve loads the repodata into the daemon's gateway; then one build
    warm_ms, solve_ms, fresh_ms, fresh_whole_ms, same_env = [], [], [], [], True
    for extra in extras:
        specs = [*roots, extra]  # the edit: the request changes, its resolution does not
        write_env(ws / f"resolve-{tag}", channel, specs, f"bench-resolve-{tag}")
        elapsed, view = d.warm(project)
        warm_ms.append(elapsed)
        solve_ms.append(d.last_solve_ms())
        same_env &= view["env_key"] == base["env_key"]
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", FRESH_SOLVE, str(ws / "fresh-cache"), channel.as_uri(), *specs],
                             capture_output=True, text=True, check=True, env=ENV)
        fresh_whole_ms.append(since(started))
        solve_inside_ms, n = json.loads(out.stdout)
        fresh_ms.append(solve_inside_ms)
        assert n == len(records), f"the fresh solve found {n} packages, not {len(records)}"
    return {"roots": roots, "packages": len(records), "reachable_records": reachable, "rounds": len(warm_ms),
            "same_env_key": same_env, "daemon_warm_ms": med(warm_ms), "daemon_solve_ms": med(solve_ms),
            "fresh_solve_ms": med(fresh_ms), "fresh_process_ms": med(fresh_whole_ms)}


def bench_ctl(d: Daemon, reps: int) -> dict:
    """`provisionctl warm NAME` of a ready env, whole process, vs `python -c pass` (alternating)."""
    assert d.ctl("warm", "bench-all").startswith(str(d.home)), "warm did not print the prefix"
    ctl_ms, py_ms, api_ms = [], [], []
    for _ in range(reps):
        for argv, samples in ((CTL + ["--socket", str(d.socket), "warm", "bench-all"], ctl_ms),
                              ([sys.executable, "-c", "pass"], py_ms)):
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=ENV)
            samples.append(since(started))
        api_ms.append(d.warm("bench-all")[0])
    return {"rounds": reps, "ctl_ms": med(ctl_ms), "python_pass_ms": med(py_ms), "api_round_trip_ms": med(api_ms)}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    files = (Path(top, f) for top, _, names in os.walk(root) for f in names)
    return {str(p.relative_to(root.parent)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in files}


def bench_second_project(d: Daemon, ws: Path, channel: Path, pkgs: list[Pkg]) -> dict:
    """A second project whose file differs only in name and a comment: `provisionctl warm DIR`, whole process."""
    project = write_env(ws / "copy", channel, [p.name for p in pkgs], "bench-copy", comment="a colleague's copy")
    before = snapshot(d.home) | snapshot(ws / "state")
    started = time.perf_counter()
    prefix = d.ctl("warm", str(project)).strip()
    elapsed = since(started)
    after = snapshot(d.home) | snapshot(ws / "state")
    written = sorted(p for p in after if after[p] != before.get(p))
    # Registry rows and the new name's activation (three small text files) are metadata; env files
    # are what a build writes: the prefix, the package cache, the lock, the env's activation.
    metadata = ("home/state.db", "home/activation/names/")
    in_store = [p for p in written if p.startswith("home/") and not p.startswith(metadata)]
    return {"ready_ms": round(elapsed, 1), "same_prefix": prefix == d.client.get("/v1/envs/bench-all")["prefix"],
            "written": written, "env_files_written_in_store": len(in_store)}


def table(r: dict) -> str:
    b, s, t, c, p = r["build"], r["resolve"], r["resolve_shallow"], r["ctl"], r["second"]

    def row(label: str, ours: float, base: float, target: float) -> list[str]:
        return [label, f"{ours:.1f} ms", f"{base:.1f} ms", f"{ours / base:.2f}x", f"<= {target}x",
                "ok" if ours / base <= target else "MISS"]

    rows = [["benchmark", "provisiond", "baseline", "ratio", "target", ""],
            row(f"1 fresh build, warm cache ({b['packages']} pkgs, {b['files_per_env']} files)",
                b["daemon_ms"], b["bare_install_ms"], 1.1),
            row("  (daemon build step only: its build row)", b["daemon_build_ms"], b["bare_install_ms"], 1.1),
            [f"  of which the durability step ({b['sync']} + fsyncs, info)", f"{b['daemon_sync_ms']:.1f} ms",
             f"{b['bare_install_ms']:.1f} ms", f"{b['daemon_sync_ms'] / b['bare_install_ms']:.2f}x", "-", ""],
            row("  edited spec: solve + build (info)", b["daemon_warm_ms"], b["bare_install_ms"], 1.1),
            row(f"2 re-solve after edit, deep ({s['packages']} pkgs, reach {s['reachable_records']} of "
                f"{r['records']})", s["daemon_warm_ms"], s["fresh_solve_ms"], 0.15),
            row("  (daemon solve step only: its log)", s["daemon_solve_ms"], s["fresh_solve_ms"], 0.15),
            row(f"  same, typical ({t['packages']} pkgs, reach {t['reachable_records']} of {r['records']})",
                t["daemon_warm_ms"], t["fresh_solve_ms"], 0.15),
            row(f"3 {r['ctl_command']} warm NAME (ready), whole process", c["ctl_ms"], c["python_pass_ms"], 1.5),
            ["4 second project, same resolution", f"{p['ready_ms']:.1f} ms", "-", "-", "0 files",
             "ok" if p["env_files_written_in_store"] == 0 and p["same_prefix"] else "MISS"]]
    e, es = r.get("engines", {}), r.get("engines_small", {})
    if "micromamba" in e and "micromamba" in es:
        m, ra, ms, rs = e["micromamba"], e["rattler"], es["micromamba"], es["rattler"]
        mm, mms = e["micromamba+micromamba"], es["micromamba+micromamba"]
        rows += [row(f"5 new env, micromamba engine ({e['packages']} pkgs) vs raw `micromamba create`",
                     m["new_env_ms"], m["raw_create_ms"], 1.2),
                 row("  same, micromamba_install = micromamba (info)", mm["new_env_ms"], mm["raw_create_ms"], 1.2),
                 row("  same, rattler engine (info)", ra["new_env_ms"], ra["raw_create_ms"], 1.2),
                 row("  one leaf and its dependencies, micromamba engine", ms["new_env_ms"], ms["raw_create_ms"], 1.2),
                 row("  one leaf and its dependencies, micromamba_install = micromamba (info)",
                     mms["new_env_ms"], mms["raw_create_ms"], 1.2),
                 row("  one leaf and its dependencies, rattler engine (info)", rs["new_env_ms"], rs["raw_create_ms"],
                     1.2),
                 row("6 re-solve after edit, micromamba engine vs raw `create --dry-run`", m["resolve_ms"],
                     m["raw_dry_run_ms"], 1.2),
                 row("  same, rattler engine (info)", ra["resolve_ms"], ra["raw_dry_run_ms"], 1.2)]
    elif e:
        rows.append(["5-6 engines vs raw micromamba", "-", "-", "-", "-", e.get("skipped", "")])
    lk, l4 = r["locked"], r["lock4"]
    rows += [row(f"7 project with a current lock, fresh home ({lk['packages']} pkgs) vs create -f of it",
                 lk["watch_ms"], lk["create_ms"], 1.1),
             row(f"8 lock for 4 platforms, whole process ({l4['records_per_platform']} records each)",
                 l4["lock_ms"], l4["fresh_ms"], 1.0)]
    for group in r["kinds"]:
        for kind in group["kinds"]:
            target = 0.02 if kind["path"] == "kept (no solve)" else 0.4
            rows.append(row(f"9 re-lock, {group['tag']}: {kind['kind']} [{kind['path']}]", kind["relock_step_ms"],
                            kind["fresh_solve_ms"], target))
    widths = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(x, widths))) for x in rows]
    notes = [
        f"filesystem: {r['filesystem']}; {os.cpu_count()} cpus; py-rattler {r['rattler']}; python "
        f"{sys.version.split()[0]}.",
        f"1: medians of {b['rounds']} alternating rounds. Each round the daemon creates a NEW env over its socket "
        "from an @EXPLICIT lock of every package but one leaf (`provisionctl create -f`: parse, install, publish, "
        "registry), and a bare rattler.install puts the same records into a fresh prefix; both use the daemon's "
        f"pkgs/ cache, warmed beforehand. 'edited spec' warms a project whose file changed: solve "
        f"{b['daemon_solve_ms']:.1f} ms (its log) + build. The durability step (durable.py: the build's files "
        f"to the disk before the marker, rename and row; the bare install has none) is timed in each build's "
        f"log; without it the build row would be {b['daemon_build_ms'] - b['daemon_sync_ms']:.1f} ms "
        f"({(b['daemon_build_ms'] - b['daemon_sync_ms']) / b['bare_install_ms']:.2f}x).",
        "2: the solver's own work grows with the records the request reaches; the daemon saves loading and "
        "parsing repodata (its Gateway keeps it in memory), not that work. 'deep' roots reach most of the "
        "channel; 'typical' roots reach a few percent, as most conda-forge requests do. "
        f"Medians of {s['rounds']} edits of one project ({' '.join(s['roots'])}, plus one more name from its "
        f"own resolution each time; they reach {s['reachable_records']} records): a new spec_key, the same "
        f"env_key ({'yes' if s['same_env_key'] else 'NO'}), so the warm is parse + solve + lookup. Baseline: "
        "rattler.solve in a new process, timed inside from before the Gateway exists to the end of the solve; "
        f"that whole process took {s['fresh_process_ms']:.1f} ms.",
        f"3: medians of {c['rounds']} alternating runs, baseline `{Path(sys.executable).name} -c pass`; the same "
        f"warm from an in-process client (no process start) takes {c['api_round_trip_ms']:.1f} ms.",
        "4: `provisionctl warm DIR` (register + warm, whole process) of a project whose file differs from "
        f"bench-all's only in name and a comment: same prefix: {'yes' if p['same_prefix'] else 'NO'}; env files "
        f"written in the store: {p['env_files_written_in_store']}; all files written: "
        f"{', '.join(p['written']) or 'none'} (home/state.db* hold registry rows, home/activation/names/ the "
        "new name's activation for run and cold-start).",
        "5-6: each engine on its own daemon and store, caches warmed by an env of every package; a NEW env "
        "(a project dropping one leaf, or only one leaf: `warm` = solve + build) against a raw `micromamba "
        "create` of the same specs into a fresh prefix from the same caches; then an edit that keeps the "
        "resolution against a raw `micromamba create --dry-run` (benchmarks/bench_engines.py). The micromamba "
        "engine (default micromamba_install = rattler) runs one micromamba process for a new spec (the solve) "
        "and links with rattler's installer in the daemon; with micromamba_install = micromamba it runs two "
        "(the solve, then an @EXPLICIT install): the prefix path is named by env_key, known only after the solve.",
        f"7: medians of {lk['rounds']} rounds, each on two fresh homes (a new daemon each, cold package cache): "
        "one watches a project whose conda-lock.yml is current (register + warm over the API), the other runs "
        f"`create -f conda-lock.yml`. Solves on the fresh homes: {lk['solves_on_fresh_homes']} (their logs); same "
        f"env_key: {'yes' if lk['same_env_key'] else 'NO'}.",
        f"8: `provisionctl lock -p linux-64 -p osx-64 -p osx-arm64 -p win-64` (whole process, no previous lock, the "
        "daemon's repodata warm), against one new process making 4 rattler.solve calls (one Gateway), medians of "
        f"{l4['rounds']}.",
        "9: the re-lock after each edit kind of a project with a previous lock, as the daemon logs it (the "
        "re-solve: the previous lock kept and pruned, or a solve preferring it), against rattler.solve of the "
        "edited file in a new process (timed inside, as row 2). Driven through the `lock` route, the previous "
        "conda-lock.yml restored first; the path taken is in brackets; targets: 0.02x when the previous lock is "
        "kept, 0.4x otherwise. The whole route (parse the file, read the restored lock: pure-Python YAML, "
        "re-lock, write the lock), typical then deep: "
        + "; ".join(f"{k['kind']} {k['lock_route_ms']} ms" for g in r["kinds"] for k in g["kinds"]) + ".",
    ]
    wrapped = [line for n in notes for line in textwrap.wrap(n, 110, subsequent_indent="   ")]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", *wrapped])


def main() -> int:
    args = parse_args(__doc__, quick="smaller channels, fewer repetitions (smoke run)")
    n_pkgs, n_files, n_records, build_reps, solve_reps, ctl_reps, lock_reps = (
        (40, 20, 10_000, 3, 3, 10, 2) if args.quick else (100, 50, 50_000, 9, 7, 40, 5))
    say = progress(args.json)
    with workspace(args, "pvb-") as (ws, _), Daemon(ws) as d:
        ENV["PROVISIOND_STATE"] = str(ws / "state")  # per-user activation/secrets: keep them in the work dir too
        say(f"work dir {ws} ({filesystem(ws, detail=True)})")
        pkgs = generated_packages(n_pkgs, n_files)
        small = build_channel(ws / "channel-build", pkgs)
        big = write_repodata_only_channel(ws / "channel-solve", n_records)
        d.start()
        r: dict = {"quick": args.quick, "filesystem": filesystem(ws, detail=True), "records": n_records,
                   "rattler": rattler.__version__, "ctl_command": " ".join(Path(a).name for a in CTL)}
        say("1/5 fresh builds ...")
        r["build"] = bench_build(d, ws, small, pkgs, build_reps)
        say("2/5 re-solves ...")
        r["resolve"] = bench_resolve(d, ws, big, solve_reps, DEEP, "deep")
        r["resolve_shallow"] = bench_resolve(d, ws, big, solve_reps, SHALLOW, "typical")
        say("3/5 provisionctl warm ...")
        r["ctl"] = bench_ctl(d, ctl_reps)
        say("4/5 second project ...")
        r["second"] = bench_second_project(d, ws, small, pkgs)
        say("5/5 project locks and re-locks by edit kind ...")
        r["locked"] = bench_locked_project(d, ws, small, [p.name for p in pkgs], lock_reps)
        r["lock4"] = bench_lock_platforms(d, ws, n_records // 5, lock_reps)
        r["kinds"] = [bench_relock_kinds(d, ws, big, r[k]["roots"], solve_reps, FRESH_SOLVE, tag)
                      for k, tag in (("resolve_shallow", "typical"), ("resolve", "deep"))]
        r["daemon_exit"] = d.stop()
        say("5/5 both engines against raw micromamba ...")
        r["engines"] = bench_engines(ws / "engines", small, pkgs, build_reps)
        r["engines_small"] = bench_engines(ws / "engines", small, pkgs, build_reps, small=True)
        print(json.dumps(r, indent=2) if args.json else table(r))
        return 0 if r["daemon_exit"] == 0 else 1


if __name__ == "__main__":
    run(main)
