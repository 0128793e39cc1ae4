#!/usr/bin/env python3
"""Issue 13 benchmark: many names and projects. `list` and `status`, a restart to health, gc.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--tmp DIR] [--json] [--keep]

Builds a real local channel (100 generated packages) and starts its own provisiond on a private
store. Registers 300 projects through the API (100 distinct envs, three projects each), then adds
clones up to 3,000 names. At 10, 300 and 3,000 names it times `provisionctl list`
and `provisionctl status` (whole processes) against `python -c pass`, and the GET request alone.
It restarts the daemon with 0 and 300 projects (and 300 whose signatures were dropped, as after an
upgrade) and times the start to the first health answer, and the socket's appearance to it. Last,
gc on 1,000 envs in-process: the first run (which measures every env once) and the next.
benchmarks/README.md ("Scale") says what each row measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import CTL, ENV, BenchDaemon, filesystem, parse_args, progress, run, workspace

from provisiond.cli.client import Client
from provisiond.config.settings import Paths
from provisiond.domain.errors import DaemonUnavailableError
from provisiond.domain.lock import Lock, Package
from provisiond.store import gc
from provisiond.store.store import Store
from provisiond.testing.channel import build_channel, generated_packages

SIZES = (10, 300, 3000)
PROJECTS = 300  # the rest are clones
ENVS = 100  # distinct envs among the projects: `list` shows each env's projects beside each of its names
TARGET_VS_PASS = 1.5  # `list` and `status` at 300 names, whole process, against `python -c pass`


def timed(argv: list[str], rounds: int, env: dict[str, str]) -> float:
    """Median wall time in ms of ``argv`` as a new process (its output discarded)."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return common.med(samples)


def request_ms(client: Client, path: str, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
    return common.med(samples, 2)


def populate(d: BenchDaemon, ws: Path, channel: Path, upto: int, have: int) -> None:
    """Projects up to PROJECTS (ENVS distinct envs, so PROJECTS / ENVS projects share each), then clones."""
    client = d.client
    for i in range(have, upto):
        if i < PROJECTS:
            directory = ws / "work" / f"proj{i:04d}"
            directory.mkdir(parents=True)
            (directory / "environment.yml").write_text(
                f"name: proj{i:04d}\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - gen-{i % ENVS:04d}\n")
            client.post("/v1/projects", {"path": str(directory), "warm": False, "allow": True})
            client.post(f"/v1/envs/proj{i:04d}/warm", {})
        else:
            client.post(f"/v1/envs/proj{i % PROJECTS:04d}/clone", {"target": f"clone{i:05d}"})


def restart(d: BenchDaemon, say) -> dict[str, float]:
    """Stop, then start the daemon: ms from the start to the first health answer, and from the
    socket's appearance to it (requests sent as fast as they are refused)."""
    d.stop()
    d.socket.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(d.log or d.home.parent / "daemon.log", "ab") as log:
        d.proc = subprocess.Popen(d.argv(), stdout=subprocess.DEVNULL, stderr=log, env=d.environ())
    appeared = None
    client = Client(d.socket, timeout=30)
    while True:
        if appeared is None and d.socket.exists():
            appeared = time.perf_counter()
        try:
            client.get("/v1/health")
            break
        except DaemonUnavailableError:
            if d.proc.poll() is not None:
                raise RuntimeError("provisiond did not start") from None
            time.sleep(0.001)
    done = time.perf_counter()
    appeared = appeared or done
    return {"start_to_health_ms": round((done - t0) * 1000, 1), "socket_to_health_ms": round((done - appeared) * 1000, 1)}


def gc_bench(ws: Path, envs: int, files: int) -> dict[str, float]:
    """gc --dry-run over ``envs`` unreferenced envs of ``files`` files each, in-process: the first run
    measures every env (once), the next reads the kept sizes."""
    paths = Paths(home=ws / "gcstore", socket=ws / "gc.sock", state=ws / "gcstate")
    with Store.open(paths) as store:
        for i in range(envs):
            lock = Lock(platform="linux-64", packages=(Package(
                name=f"p{i}", version="1", build="0", build_number=0, subdir="linux-64", channel="file:///c/",
                url=f"file:///c/linux-64/p{i}-1-0.conda", file_name=f"p{i}-1-0.conda", sha256=f"{i:064x}"),))
            build_dir = store.new_build_dir(lock.env_key)
            (build_dir / "lib").mkdir()
            for f in range(files):
                (build_dir / "lib" / f"f{f}.py").write_bytes(b"x" * 100)
            store.place(lock, build_dir)
            store.add_env(lock, paths.prefix(lock.env_key))

        async def once() -> float:
            t0 = time.perf_counter()
            await gc.collect(store, dry_run=True, older_than_days=0, cache_budget_bytes=None,
                             in_use=lambda key, leases=None: None, pinned=set)
            return (time.perf_counter() - t0) * 1000

        first = asyncio.run(once())
        later = [asyncio.run(once()) for _ in range(3)]
    return {"envs": envs, "files_per_env": files, "first_ms": round(first, 1), "next_ms": common.med(later)}


def main() -> int:
    args = parse_args(__doc__, quick="fewer rounds, 1,000 names at most, gc on 200 envs")
    say = progress(args.json)
    rounds = 3 if args.quick else 7
    sizes = (10, 300, 1000) if args.quick else SIZES
    env = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with workspace(args, "pvs-", socket_dir=True) as (ws, short), BenchDaemon(ws, short / "d.sock") as d:
        say(f"work dir {ws} ({filesystem(ws)})")
        channel = build_channel(ws / "channel", generated_packages(ENVS, files_per_pkg=3))
        d.start()
        result: dict = {"filesystem": filesystem(ws), "cpus": os.cpu_count(), "rounds": rounds}
        result["restart_0_projects"] = restart(d, say)
        baseline = timed([sys.executable, "-c", "pass"], rounds, env)
        result["python_pass_ms"] = baseline
        rows, have = [], 0
        denv = {**env, **d.environ()}
        for size in sizes:
            say(f"registering up to {size} names ...")
            populate(d, ws, channel, size, have)
            have = size
            if size >= PROJECTS and "restart_300_projects" not in result:
                say("restarting with 300 projects ...")
                result["restart_300_projects"] = restart(d, say)
                d.stop()
                with sqlite3.connect(d.home / "state.db") as db:  # as after an upgrade: nothing kept
                    db.execute("DELETE FROM fresh")
                db.close()
                result["restart_300_projects_unkept"] = restart(d, say)
                time.sleep(2)  # let its start-up warms finish before timing `list`
            say(f"timing list and status at {size} names ...")
            row = {"names": size,
                   "list_ms": timed([*CTL, "--home", str(d.home), "--socket", str(d.socket), "list"], rounds, denv),
                   "status_ms": timed([*CTL, "--home", str(d.home), "--socket", str(d.socket), "status"], rounds, denv),
                   "list_request_ms": request_ms(d.client, "/v1/envs", rounds),
                   "status_request_ms": request_ms(d.client, "/v1/status", rounds)}
            if size == sizes[0]:  # activate's fast paths: a name (the store's file), a path (the state dir's)
                ctl = [*CTL, "--home", str(d.home), "--socket", str(d.socket)]
                result["activate_name_ms"] = timed([*ctl, "activate", "proj0000",
                                                    "--shell", "bash"], rounds, denv)
                result["activate_path_ms"] = timed([*ctl, "activate", str(ws / "work" / "proj0000"), "--shell",
                                                    "bash"], rounds, denv)
            row["list_vs_pass"] = round(row["list_ms"] / baseline, 2)
            row["status_vs_pass"] = round(row["status_ms"] / baseline, 2)
            rows.append(row)
        result["rows"] = rows
        say("gc ...")
        result["gc"] = gc_bench(ws, 200 if args.quick else 1000, 20)
        result["daemon_exit"] = d.stop()
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


def table(r: dict) -> str:
    out = [f"python -c pass: {r['python_pass_ms']} ms (median of {r['rounds']}); {r['cpus']} cpus; work dir on "
           f"{r['filesystem']}", "",
           f"{'names':>6}  {'list':>9}  {'x pass':>6}  {'status':>9}  {'x pass':>6}  {'GET /v1/envs':>12}  "
           f"{'GET /v1/status':>14}"]
    for row in r["rows"]:
        out.append(f"{row['names']:>6}  {row['list_ms']:>6.1f} ms  {row['list_vs_pass']:>5.2f}x  "
                   f"{row['status_ms']:>6.1f} ms  {row['status_vs_pass']:>5.2f}x  {row['list_request_ms']:>9.2f} ms  "
                   f"{row['status_request_ms']:>11.2f} ms")
    at300 = next((row for row in r["rows"] if row["names"] == 300), None)
    if at300:
        ok = max(at300["list_vs_pass"], at300["status_vs_pass"]) <= TARGET_VS_PASS
        out.append(f"target: list and status at 300 names <= {TARGET_VS_PASS}x python -c pass: "
                   f"{'ok' if ok else 'MISS'}")
    if "activate_name_ms" in r:
        out.append(f"provisionctl activate NAME: {r['activate_name_ms']:.1f} ms "
                   f"({r['activate_name_ms'] / r['python_pass_ms']:.2f}x pass); activate PATH: "
                   f"{r['activate_path_ms']:.1f} ms ({r['activate_path_ms'] / r['python_pass_ms']:.2f}x pass)")
    out.append("")
    for key, label in (("restart_0_projects", "restart, 0 projects"),
                       ("restart_300_projects", "restart, 300 projects (signatures kept)"),
                       ("restart_300_projects_unkept", "restart, 300 projects (signatures dropped)")):
        if key in r:
            v = r[key]
            out.append(f"{label:<45} start to health {v['start_to_health_ms']:>7.1f} ms; socket to health "
                       f"{v['socket_to_health_ms']:>6.1f} ms (target <= 50 ms)")
    g = r["gc"]
    out.append(f"gc --dry-run, {g['envs']} envs x {g['files_per_env']} files: first run (measures each env once) "
               f"{g['first_ms']:.1f} ms; next runs {g['next_ms']:.1f} ms (target < 1000 ms)")
    return "\n".join(out)


if __name__ == "__main__":
    run(main)
