#!/usr/bin/env python3
"""Issue 2 benchmark: provisiond vs the bare tools it wraps, measured in one run on generated channels.

    .venv/bin/python benchmarks/bench_core.py [--quick] [--tmp DIR] [--json] [--keep]

Starts its own provisiond (``python -m provisiond``) on a private store and socket, and removes
everything at the end. See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rattler  # noqa: E402

from provisiond.client import Client  # noqa: E402
from provisiond.engines.rattler import record_of  # noqa: E402
from provisiond.errors import DaemonUnavailableError  # noqa: E402
from provisiond.lock import Lock  # noqa: E402
from provisiond.testing.channel import (  # noqa: E402
    Pkg, build_channel, build_package, generated_packages, write_repodata_only_channel)

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
CONSOLE = Path(sys.executable).parent / "provisionctl"
CTL = [str(CONSOLE)] if CONSOLE.exists() else [sys.executable, "-m", "provisiond.cli"]
PLATFORMS = [str(rattler.Platform.current()), "noarch"]

# The fresh-process solve: timed inside, from before the Gateway exists to the solve's end.
FRESH_SOLVE = r"""
import asyncio, json, os, sys, time
import rattler
async def go():
    t = time.perf_counter()
    gateway = rattler.Gateway(cache_dir=sys.argv[1])
    records = await rattler.solve(
        sources=[rattler.Channel(sys.argv[2])], specs=sys.argv[3:], gateway=gateway,
        platforms=[str(rattler.Platform.current()), "noarch"], virtual_packages=rattler.VirtualPackage.detect(),
        channel_priority=rattler.ChannelPriority.Strict, timestamp_policy="allow-missing")
    return time.perf_counter() - t, len(records)
seconds, n = asyncio.run(go())
print(json.dumps({"solve_s": seconds, "packages": n}))
sys.stdout.flush()
os._exit(0)
"""


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def median_ms(samples: list[float]) -> float:
    return ms(statistics.median(samples))


def filesystem(path: Path) -> str:
    """The filesystem type and mount point holding ``path`` (longest matching mount in /proc/mounts)."""
    best, found = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        dev, mnt, fstype, opts = line.split()[:4]
        if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
            best, found = mnt, f"{fstype} on {mnt} ({dev}; {opts})"
    return found


def write_env(directory: Path, channel: Path, deps: list[str], name: str, comment: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"# {comment}"] if comment else []
    lines += [f"name: {name}", "channels:", f"  - {channel.as_uri()}", "dependencies:", *(f"  - {d}" for d in deps)]
    (directory / "environment.yml").write_text("\n".join(lines) + "\n")
    return directory


class Daemon:
    """A real provisiond on a private store and socket; its INFO log is parsed for solve/build times."""

    def __init__(self, work: Path) -> None:
        self.home, self.socket, self.log = work / "home", work / "d.sock", work / "daemon.log"
        self.client = Client(self.socket, timeout=600)
        self.config = work / "no-config.toml"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        argv = [sys.executable, "-m", "provisiond", "--home", str(self.home), "--socket", str(self.socket)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log,
                                         env={**ENV, "PROVISIOND_CONFIG": str(self.config)})
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.get("/v1/health")
                return self
            except DaemonUnavailableError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"provisiond did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def add(self, project: Path) -> str:
        return str(self.client.post("/v1/projects", {"path": str(project), "warm": False})["name"])

    def warm(self, name: str) -> tuple[float, dict]:
        started = time.perf_counter()
        view = self.client.post(f"/v1/envs/{name}/warm", {})
        return time.perf_counter() - started, view

    def last_log_ms(self, pattern: str, scale: float = 1.0) -> float:
        """The number captured by ``pattern`` in the daemon log's last matching line, in ms."""
        found = re.findall(pattern, self.log.read_text())
        return float(found[-1]) * scale if found else float("nan")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CTL, "--socket", str(self.socket), *args], capture_output=True, text=True,
                              env=ENV, check=True)


def bench_build(d: Daemon, ws: Path, channel: Path, pkgs: list[Pkg], reps: int) -> dict:
    """Daemon warm of a new env vs bare rattler.install of the same records, both from the same warm cache."""
    names = [p.name for p in pkgs]
    # Warm the package cache (and have a ready env for rows 3 and 4): an env of every package.
    d.add(write_env(ws / "all", channel, names, "bench-all"))
    d.warm("bench-all")
    full = Lock.from_wire(d.client.get("/v1/envs/bench-all/lock"))
    # A leaf is a package nothing depends on: "all but leaf k" is a new env_key with one fewer record.
    leaves = [p.name for p in pkgs if not any(p.name == dep.split()[0] for q in pkgs for dep in q.depends)]
    daemon_s, daemon_log_ms, bare_s = [], [], []
    for k, leaf in enumerate(leaves[:reps]):
        subset = [n for n in names if n != leaf]
        packages = [p for p in full.packages if p.name != leaf]
        project = d.add(write_env(ws / f"build-{k}", channel, subset, f"bench-build-{k}"))
        records = [record_of(p) for p in packages]
        prefix = ws / "bare" / str(k)

        async def bare() -> float:
            started = time.perf_counter()
            await rattler.install(records, target_prefix=prefix, cache_dir=d.home / "pkgs",
                                  show_progress=False, execute_link_scripts=False)
            return time.perf_counter() - started

        def daemon() -> None:
            seconds, view = d.warm(project)
            daemon_s.append(seconds)
            daemon_log_ms.append(d.last_log_ms(r"env \w+ ready at .*?\(build \d+, ([\d.]+)s\)", 1000))
            built = Lock.from_wire(d.client.get(f"/v1/envs/{project}/lock"))
            assert {p.url for p in built.packages} == {p.url for p in packages}, "daemon resolved other records"

        if k % 2:  # alternate who goes first
            bare_s.append(asyncio.run(bare()))
            daemon()
        else:
            daemon()
            bare_s.append(asyncio.run(bare()))
    files = sum(len(files) for _, _, files in os.walk(ws / "bare" / "0"))
    return {"packages": len(full.packages) - 1, "files_per_env": files, "rounds": len(daemon_s),
            "daemon_ms": median_ms(daemon_s), "daemon_build_log_ms": round(statistics.median(daemon_log_ms), 1),
            "bare_install_ms": median_ms(bare_s), "daemon_samples_ms": [ms(s) for s in daemon_s],
            "bare_samples_ms": [ms(s) for s in bare_s]}


def make_installable(channel: Path, roots: list[str]) -> list[rattler.RepoDataRecord]:
    """Solve ``roots`` once, then build real archives for exactly those records and patch their hashes
    into repodata.json, so the daemon can build that one env from the 50k-record channel."""
    records = asyncio.run(rattler.solve(
        sources=[rattler.Channel(channel.as_uri())], specs=roots, gateway=rattler.Gateway(), platforms=PLATFORMS,
        virtual_packages=rattler.VirtualPackage.detect(), timestamp_policy="allow-missing"))
    repodata_path = channel / PLATFORMS[0] / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    for r in records:
        ext = ".conda" if r.file_name.endswith(".conda") else ".tar.bz2"
        pkg = Pkg(r.name.normalized, str(r.version), build=str(r.build), build_number=r.build_number,
                  depends=tuple(r.depends), files={f"share/{r.name.normalized}/README": r.file_name}, format=ext)
        data = build_package(pkg, channel / r.subdir, r.subdir).read_bytes()
        entry = repodata["packages.conda" if ext == ".conda" else "packages"][r.file_name]
        entry.update(sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest(), size=len(data))
    repodata_path.write_text(json.dumps(repodata, separators=(",", ":")))
    return records


def bench_resolve(d: Daemon, ws: Path, channel: Path, n_names: int, reps: int) -> dict:
    """Warm after an edit (new spec_key, same resolution → already-built env) vs rattler.solve in a new process."""
    roots = [f"syn-{int(n_names * f):05d}" for f in (0.9, 0.68, 0.45, 0.23)]
    records = make_installable(channel, roots)
    extras = sorted(r.name.normalized for r in records if r.name.normalized not in roots)[:reps]
    project = d.add(write_env(ws / "resolve", channel, roots, "bench-resolve"))
    _, base = d.warm(project)  # first solve (loads repodata into the daemon's gateway) and build
    warm_s, solve_log_ms, fresh_s, fresh_whole_s, same_env = [], [], [], [], True
    for k, extra in enumerate(extras):
        specs = [*roots, extra]  # an edit: the request changes, its resolution does not
        write_env(ws / "resolve", channel, specs, "bench-resolve")
        seconds, view = d.warm(project)
        warm_s.append(seconds)
        solve_log_ms.append(d.last_log_ms(r"solved .*?: \d+ packages in ([\d.]+) ms"))
        same_env &= view["env_key"] == base["env_key"]
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", FRESH_SOLVE, str(ws / "fresh-cache"), channel.as_uri(), *specs],
                             capture_output=True, text=True, check=True, env=ENV)
        fresh_whole_s.append(time.perf_counter() - started)
        fresh = json.loads(out.stdout)
        fresh_s.append(fresh["solve_s"])
        assert fresh["packages"] == len(records), f"fresh solve found {fresh['packages']} packages"
    return {"roots": roots, "packages": len(records), "rounds": len(warm_s), "same_env_key": same_env,
            "daemon_warm_ms": median_ms(warm_s), "daemon_solve_log_ms": round(statistics.median(solve_log_ms), 1),
            "fresh_solve_ms": median_ms(fresh_s), "fresh_process_ms": median_ms(fresh_whole_s)}


def bench_ctl(d: Daemon, reps: int) -> dict:
    """`provisionctl warm NAME` of a ready env, whole process, vs `python -c pass` (alternating)."""
    assert d.ctl("warm", "bench-all").stdout.strip().startswith(str(d.home)), "warm did not print the prefix"
    ctl_s, py_s, api_s = [], [], []
    for _ in range(reps):
        for argv, samples in ((CTL + ["--socket", str(d.socket), "warm", "bench-all"], ctl_s),
                              ([sys.executable, "-c", "pass"], py_s)):
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=ENV)
            samples.append(time.perf_counter() - started)
        api_s.append(d.warm("bench-all")[0])
    return {"rounds": reps, "ctl_ms": median_ms(ctl_s), "python_pass_ms": median_ms(py_s),
            "api_round_trip_ms": median_ms(api_s), "ctl": " ".join(Path(a).name for a in CTL)}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for directory, _, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(directory, f))
            out[os.path.join(directory, f)] = (st.st_mtime_ns, st.st_size)
    return out


def bench_second_project(d: Daemon, ws: Path, channel: Path, pkgs: list[Pkg]) -> dict:
    """A second project whose file differs only in name and a comment: `provisionctl warm DIR`, whole process."""
    project = write_env(ws / "copy", channel, [p.name for p in pkgs], "bench-copy", comment="a colleague's copy")
    before = snapshot(d.home)
    started = time.perf_counter()
    prefix = d.ctl("warm", str(project)).stdout.strip()
    seconds = time.perf_counter() - started
    after = snapshot(d.home)
    new = sorted(os.path.relpath(p, d.home) for p in after.keys() - before.keys())
    changed = sorted(os.path.relpath(p, d.home) for p in after.keys() & before.keys() if after[p] != before[p])
    same = prefix == d.client.get("/v1/envs/bench-all")["prefix"]
    return {"ready_ms": ms(seconds), "same_prefix": same, "new_files": new, "changed_files": changed,
            "files_written": len([f for f in new + changed if not f.startswith("state.db")])}


def table(r: dict) -> str:
    b, s, c, p = r["build"], r["resolve"], r["ctl"], r["second"]

    def row(label: str, ours: float, base: float, target: float) -> list[str]:
        ratio = ours / base
        return [label, f"{ours:.1f} ms", f"{base:.1f} ms", f"{ratio:.2f}x", f"<= {target}x",
                "ok" if ratio <= target else "MISS"]

    rows = [["benchmark", "provisiond", "baseline", "ratio", "target", ""],
            row(f"1 fresh build, warm cache ({b['packages']} pkgs, {b['files_per_env']} files)",
                b["daemon_ms"], b["bare_install_ms"], 1.1),
            row("  (daemon build step only, from its log)", b["daemon_build_log_ms"], b["bare_install_ms"], 1.1),
            row(f"2 re-solve after edit ({s['packages']} of {r['records']} records)",
                s["daemon_warm_ms"], s["fresh_solve_ms"], 0.15),
            row("  (daemon solve step only, from its log)", s["daemon_solve_log_ms"], s["fresh_solve_ms"], 0.15),
            row(f"3 {c['ctl']} warm NAME (ready), whole process", c["ctl_ms"], c["python_pass_ms"], 1.5),
            ["4 second project, same resolution", f"{p['ready_ms']:.1f} ms", "-", "-",
             "0 files", "ok" if p["files_written"] == 0 and p["same_prefix"] else "MISS"]]
    widths = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths))) for x in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", *notes(r)])


def notes(r: dict) -> list[str]:
    b, s, c, p = r["build"], r["resolve"], r["ctl"], r["second"]
    return [
        f"filesystem: {r['filesystem']}   cpus: {os.cpu_count()}   py-rattler {r['rattler']}   "
        f"python {sys.version.split()[0]}",
        f"1: medians of {b['rounds']} alternating rounds. Each round the daemon warms a NEW env (every package "
        "but one different leaf, so a new env_key: solve + install + publish, timed over the socket), and a bare "
        "rattler.install puts the same records into a fresh prefix; both share the daemon's pkgs/ cache, "
        "warmed beforehand.",
        f"2: medians of {s['rounds']} edits of one project ({' '.join(s['roots'])} + one more name from its own "
        f"resolution each time): new spec_key, same env_key ({'yes' if s['same_env_key'] else 'NO'}), so the "
        "warm is solve + lookup. Baseline: rattler.solve in a new process, timed inside from before the Gateway "
        f"exists to the end of the solve; that whole process took {s['fresh_process_ms']:.1f} ms.",
        f"3: medians of {c['rounds']} alternating runs; the same warm over an in-process client (no process "
        f"start) takes {c['api_round_trip_ms']:.1f} ms.",
        f"4: `provisionctl warm DIR` of a project differing from bench-all only in name and a comment: "
        f"same prefix: {'yes' if p['same_prefix'] else 'NO'}; new files in the store: {len(p['new_files'])}; "
        f"changed files: {', '.join(p['changed_files']) or 'none'} (state.db* = registry rows, not env files).",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller channels, fewer repetitions (smoke run)")
    ap.add_argument("--tmp", type=Path, help="where to build (default: /dev/shm if writable, else the temp dir)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    base = args.tmp or (Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir()))
    n_pkgs, n_files, n_records, build_reps, solve_reps, ctl_reps = (
        (40, 20, 10_000, 3, 3, 10) if args.quick else (100, 50, 50_000, 7, 7, 40))
    ws = Path(tempfile.mkdtemp(prefix="pvb-", dir=base)).resolve()
    d = Daemon(ws)
    try:
        log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
        log(f"work dir {ws} ({filesystem(ws)})")
        pkgs = generated_packages(n_pkgs, n_files)
        small = build_channel(ws / "channel-build", pkgs)
        big = write_repodata_only_channel(ws / "channel-solve", n_records)
        n_names = len({rec["name"] for key in ("packages", "packages.conda")
                       for rec in json.loads((big / PLATFORMS[0] / "repodata.json").read_text())[key].values()})
        d.start()
        results: dict = {"quick": args.quick, "filesystem": filesystem(ws), "records": n_records,
                         "rattler": rattler.__version__ if hasattr(rattler, "__version__") else "?"}
        log("1/4 fresh builds ...")
        results["build"] = bench_build(d, ws, small, pkgs, build_reps)
        log("2/4 re-solves ...")
        results["resolve"] = bench_resolve(d, ws, big, n_names, solve_reps)
        log("3/4 provisionctl warm ...")
        results["ctl"] = bench_ctl(d, ctl_reps)
        log("4/4 second project ...")
        results["second"] = bench_second_project(d, ws, small, pkgs)
        code = d.stop()
        results["daemon_exit"] = code
        print(json.dumps(results, indent=2) if args.json else table(results))
        return 0 if code == 0 else 1
    finally:
        d.stop()
        if args.keep:
            print(f"kept {ws}", file=sys.stderr)
        else:
            shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    try:
        status = main()
    except BaseException as exc:  # report, then still leave through os._exit (rattler can crash at exit)
        import traceback
        traceback.print_exc()
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
