#!/usr/bin/env python3
"""Issue 15 benchmark: "which of my envs still have the vulnerable X?" from the daemon, against a fresh scan.

    .venv/bin/python benchmarks/bench_audit.py [--quick] [--envs N] [--advisories N] [--tmp DIR] [--json] [--keep]

Builds a local channel and N named envs with its own provisiond, writes an OSV zip of synthetic
advisories (PyPI and conda, ranges with fixed and last_affected), points ``audit_db`` at it, then
times whole ``provisionctl audit --package X`` processes against a fresh process that loads the same
database and matches every env's lock (what a stateless scanner pays for each question).
benchmarks/README.md ("Audit") says what each row measures.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ENV, filesystem, med, parse_args, progress, run, workspace
from common import BenchDaemon as Daemon

from provisiond.testing.channel import Pkg, build_channel

TARGET_RATIO = 0.1  # the daemon's answer within a tenth of a fresh scan
NAMES = 2000  # package names the advisories spread over (the envs use the first 60)

SCAN = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from provisiond.daemon.audit import EnvPackage, findings_of, load_database
    from provisiond.domain.lock import Lock
    started = time.perf_counter()
    db = load_database(Path(sys.argv[1]))
    hits = 0
    for lock_file in sorted(Path(sys.argv[2]).glob("*.json")):
        lock = Lock.from_json(lock_file.read_text())
        packages = [EnvPackage("conda", p.name, p.version, None) for p in lock.packages]
        hits += sum(1 for _p, f in findings_of(db, packages) if f.name == sys.argv[3])
    print(hits)
""")


def write_db(path: Path, count: int, rnd: random.Random) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            name = f"pkg{rnd.randrange(NAMES)}"
            ecosystem = rnd.choice(["PyPI", "conda"])
            end = rnd.choice([{"fixed": f"{rnd.randrange(1, 4)}.{rnd.randrange(10)}"}, {"last_affected": "1.5"}])
            record = {"id": f"OSV-2026-{i}", "summary": f"{name}: synthetic advisory {i}", "details": "x" * 600,
                      "affected": [{"package": {"ecosystem": ecosystem, "name": name},
                                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, end]}]}],
                      "database_specific": {"severity": rnd.choice(["LOW", "MODERATE", "HIGH", "CRITICAL"])}}
            zf.writestr(f"{record['id']}.json", json.dumps(record))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False).stdout
    return (time.perf_counter() - started) * 1000, out


def main() -> int:
    args = parse_args(__doc__, "smoke run: 5 envs, 2,000 advisories, 3 runs",
                      lambda ap: (ap.add_argument("--envs", type=int, default=20),
                                  ap.add_argument("--advisories", type=int, default=20000),
                                  ap.add_argument("--runs", type=int, default=10)))
    envs, advisories, runs = (5, 2000, 3) if args.quick else (args.envs, args.advisories, args.runs)
    say = progress(args.json)
    rnd = random.Random(15)
    with workspace(args, "pvd-audit-", socket_dir=True) as (ws, short):
        say(f"channel of 60 packages x 2 versions, {envs} envs, {advisories} advisories")
        channel = build_channel(ws / "channel", [Pkg(f"pkg{i}", v) for i in range(60) for v in ("1.0", "2.0")])
        db = ws / "osv.zip"
        write_db(db, advisories, rnd)
        d = Daemon(ws, short / "d.sock")
        d.base_env["PROVISIOND_AUDIT_DB"] = str(db)
        with d.start():
            for e in range(envs):
                spec = ws / f"env{e}.yml"
                deps = [f"pkg{j} {rnd.choice(['1.0', '2.0'])}" for j in rnd.sample(range(60), 25)]
                spec.write_text(f"name: env{e}\nchannels:\n  - {channel.as_uri()}\ndependencies:\n"
                                + "".join(f"  - {dep}\n" for dep in deps))
                d.ctl("create", "-f", str(spec))
            wanted = "pkg7"
            full = json.loads(d.ctl("audit", "--json"))  # the daemon loaded the db at start-up; this warms envs
            rows: dict[str, list[float]] = {"scan": [], "ctl": [], "api": [], "full": []}
            env = {**d.environ(), **ENV}
            for _ in range(runs):
                rows["scan"].append(timed([sys.executable, "-c", SCAN, str(db), str(d.home / "locks"), wanted],
                                          env)[0])
                rows["ctl"].append(timed([*d.ctl_argv(), "audit", "--package", wanted, "--json"], env)[0])
                started = time.perf_counter()
                d.client.get("/v1/audit", package=wanted)
                rows["api"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                d.client.get("/v1/audit")
                rows["full"].append((time.perf_counter() - started) * 1000)
            write_db(db, advisories, random.Random(16))  # a new database: the next answer reloads it
            started = time.perf_counter()
            d.client.get("/v1/audit", package=wanted)
            reload_ms = (time.perf_counter() - started) * 1000
    base = med(rows["scan"])
    table = {"scan": base, "ctl": med(rows["ctl"]), "api": med(rows["api"], 2), "full": med(rows["full"]),
             "reload": round(reload_ms, 1), "findings": len(full["findings"]), "envs": full["envs"],
             "advisories": full["db"]["advisories"], "filesystem": filesystem(ws)}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    ratio = table["ctl"] / base
    print(f"{envs} envs, {table['advisories']} advisories, {table['findings']} findings; {table['filesystem']}")
    print(f"{'row':<66}{'ms':>9}{'ratio':>8}{'target':>10}")
    print(f"{'fresh process: load the db, match every env (baseline)':<66}{base:>9.1f}{1.0:>7.2f}x")
    ok = "ok" if ratio <= TARGET_RATIO else "MISS"
    print(f"{'provisionctl audit --package X, whole process':<66}{table['ctl']:>9.1f}{ratio:>7.2f}x"
          f"{f'<= {TARGET_RATIO}x':>10}  {ok}")
    print(f"{'  GET /v1/audit?package=X alone (info)':<66}{table['api']:>9.2f}")
    print(f"{'  GET /v1/audit, the full report (info)':<66}{table['full']:>9.1f}")
    print(f"{'  first answer after the db file changed: reload + re-audit (info)':<66}{table['reload']:>9.1f}")
    return 0


if __name__ == "__main__":
    run(main)
