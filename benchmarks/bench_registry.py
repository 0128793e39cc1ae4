#!/usr/bin/env python3
"""Issue 16 benchmark: an env through a local OCI registry against the same lock from a local HTTP channel.

    .venv/bin/python benchmarks/bench_registry.py [--quick] [--tmp DIR] [--json] [--keep]

Generates a 100-package channel (50 files each), serves it over HTTP on the loopback, builds the env
once and pushes it to a Debian ``docker-registry`` on a loopback port. Then, in the same run, each
round on fresh stores:

- ``provisionctl pull REF`` (manifest, lock, 100 blobs, extract, offline build), against
- ``provisionctl create -f lock.txt`` of the same lock (@EXPLICIT) from the HTTP channel;
- ``provisionctl push`` of the env again, every blob already there (HEAD checks and the manifest).

Whole provisionctl processes, medians. benchmarks/README.md explains the rows.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchDaemon, filesystem, med, parse_args, progress, run, workspace

from provisiond.testing import registry as reg
from provisiond.testing.channel import build_channel, generated_packages


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def daemon(work: Path, short: Path, tag: str) -> BenchDaemon:
    d = BenchDaemon(work / tag, short / f"{tag}.sock")
    d.base_env["PROVISIOND_REGISTRY_AUTH_FILE"] = str(work / "no-logins.json")
    return d.start()


def timed(d: BenchDaemon, *args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([*d.ctl_argv(), "--json", *args], capture_output=True, text=True, env=d.environ())
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"provisionctl {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return elapsed, json.loads(done.stdout)


def main() -> int:
    args = parse_args(__doc__ or "", "one round, 20 packages")
    say = progress(args.json)
    if reg.missing():
        print(f"skipped: {reg.missing()}", file=sys.stderr)
        return 0
    rounds, count = (1, 20) if args.quick else (3, 100)
    with workspace(args, "pvd-reg-", socket_dir=True) as (work, short):
        say(f"building a channel of {count} packages x 50 files")
        channel = build_channel(work / "channel", generated_packages(count, 50))
        names = sorted({p.name for p in generated_packages(count, 50)})
        server, url = serve(channel)
        registry = reg.LocalRegistry(work / "registry").start()
        try:
            project = work / "project"
            project.mkdir()
            (project / "environment.yml").write_text(
                "name: big\nchannels:\n  - " + url + "\ndependencies:\n" + "".join(f"  - {n}\n" for n in names))
            a = daemon(work, short, "a")
            try:
                say("building the env and pushing it")
                a.ctl("create", "-f", str(project / "environment.yml"), "-n", "big")
                a.ctl("export", "big", "--explicit", "-f", str(work / "lock.txt"))
                ref = f"{registry.address}/bench/big:v1"
                first_push, pushed = timed(a, "push", "big", ref)
                repush = []
                for _ in range(max(rounds, 3)):
                    ms, again = timed(a, "push", "big", ref)
                    assert again["transferred"] == 0, again
                    repush.append(ms)
            finally:
                a.stop()
            pulls, creates = [], []
            for i in range(rounds):
                say(f"round {i + 1}/{rounds}: pull, then create -f from the HTTP channel")
                b = daemon(work, short, f"b{i}")
                try:
                    ms, pulled = timed(b, "pull", ref, "-n", "big")
                    assert pulled["env_key"] == pushed["env_key"] and pulled["transferred"] == len(names), pulled
                    pulls.append(ms)
                finally:
                    b.stop()
                c = daemon(work, short, f"c{i}")
                try:
                    ms, created = timed(c, "create", "-f", str(work / "lock.txt"), "-n", "big")
                    assert created["env_key"] == pushed["env_key"], created
                    creates.append(ms)
                finally:
                    c.stop()
        finally:
            registry.stop()
            server.shutdown()
            server.server_close()
        rows = {
            "packages": pushed["blobs"] - 1,
            "pull_ms": med(pulls), "create_from_http_channel_ms": med(creates),
            "ratio": round(med(pulls) / med(creates), 2),
            "first_push_ms": round(first_push, 1), "push_all_present_ms": med(repush),
            "push_all_present_requests": again["requests"],
            "bytes": pushed["bytes"], "filesystem": filesystem(work), "rounds": rounds,
        }
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        line = "{:<62}{:>12}{:>11}{:>8}"
        print(line.format("benchmark", "provisiond", "baseline", "ratio"))
        print(line.format(f"pull + offline build, {rows['packages']} packages (registry)", f"{rows['pull_ms']:.1f} ms",
                          f"{rows['create_from_http_channel_ms']:.1f} ms", f"{rows['ratio']:.2f}x"))
        print("  baseline: create -f of the same lock from a local HTTP channel")
        print(line.format(f"push, every blob already there ({rows['push_all_present_requests']} requests)",
                          f"{rows['push_all_present_ms']:.1f} ms", "-", "-"))
        print(line.format(f"first push ({rows['bytes'] / 1048576:.1f} MiB, info)", f"{rows['first_push_ms']:.1f} ms",
                          "-", "-"))
        print(f"on {rows['filesystem']}, medians of {rounds} rounds")
    return 0


if __name__ == "__main__":
    run(main)
