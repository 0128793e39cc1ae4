"""Both engines against raw micromamba (imported by bench_core.py: rows 5 and 6).

Each engine gets its own daemon and store. After one env of every package (the package and
repodata caches warm), each round creates a NEW env through the daemon (a project whose file drops
one leaf: solve + build, `warm` over the socket) and a raw ``micromamba create`` of the same specs
into a fresh prefix from warm caches (for every row, the store of the micromamba engine with
micromamba_install = micromamba: its caches are in micromamba's own layout); then a re-solve (an
edit that keeps the resolution) against a raw ``micromamba create --dry-run`` of the same specs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from common import ENV, BenchDaemon, med

from provisiond.testing.channel import Pkg
from provisiond.testing.micromamba import find_test_micromamba


class EngineDaemon(BenchDaemon):
    def __init__(self, work: Path, variant: str, micromamba: Path | None) -> None:
        super().__init__(work, work / f"{variant[0]}{len(variant)}.sock", home=f"home-{variant}")
        self.log = self.fixed_log = work / f"daemon-{variant}.log"
        engine, _, linker = variant.partition("+")
        self.args = ["--engine", engine]
        if micromamba is not None:
            self.base_env["PROVISIOND_MICROMAMBA_PATH"] = str(micromamba)
        if linker:
            self.base_env["PROVISIOND_MICROMAMBA_INSTALL"] = linker

    def warm_project(self, project: Path) -> tuple[float, dict]:
        name = self.client.post("/v1/projects", {"path": str(project), "warm": False, "allow": True})["name"]
        started = time.perf_counter()
        view = self.client.post(f"/v1/envs/{name}/warm", {})
        return (time.perf_counter() - started) * 1000, view


def raw_create(mm: Path, home: Path, channel: Path, prefix: Path, specs: list[str], *, dry_run: bool) -> float:
    argv = [str(mm), "create", "-y", "--json", "--no-rc", "-r", str(home / "mamba-root"), "-p", str(prefix),
            "--override-channels", "-c", channel.as_uri(), *(["--dry-run"] if dry_run else []), *specs]
    env = {**ENV, "CONDA_PKGS_DIRS": str(home / "pkgs"), "HOME": str(home / "mamba-root")}
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return (time.perf_counter() - started) * 1000


def write(directory: Path, channel: Path, deps: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["channels:", f"  - {channel.as_uri()}", "dependencies:", *(f"  - {d}" for d in deps)]
    (directory / "environment.yml").write_text("\n".join(lines) + "\n")
    return directory


def bench_engines(ws: Path, channel: Path, pkgs: list[Pkg], reps: int, *, small: bool = False) -> dict:
    """``small``: each new env is one leaf and what it needs, not every package but one leaf."""
    mm = find_test_micromamba()
    if mm is None:
        return {"skipped": "no micromamba (PATH, PROVISIOND_MICROMAMBA_PATH, ../shared/tools/micromamba)"}
    names = [p.name for p in pkgs]
    leaves = [p.name for p in pkgs if not any(p.name == dep.split()[0] for q in pkgs for dep in q.depends)]
    out: dict = {"packages": "one leaf and its dependencies" if small else len(names) - 1}
    # The raw `create`s of every variant use the first store (micromamba_install = micromamba): its warm-up
    # env leaves its caches warm in micromamba's own layout (the default links with rattler: rattler's layout).
    raw_home: Path | None = None
    # "micromamba": the default (micromamba solves, rattler links); "+micromamba": micromamba_install = micromamba
    for engine in ("micromamba+micromamba", "micromamba", "rattler"):
        with EngineDaemon(ws / ("small" if small else "full"), engine, mm) as d:
            raw_home = raw_home or d.home
            d.start()
            d.home.parent.mkdir(parents=True, exist_ok=True)
            d.warm_project(write(d.home.parent / f"{engine}-all", channel, names))
            new_ms, raw_ms, resolve_ms, raw_solve_ms = [], [], [], []
            names_of: dict[Path, str] = {}
            for k in range(reps):
                specs = [leaves[k]] if small else [n for n in names if n != leaves[k]]
                project = write(d.home.parent / f"{engine}-new-{k}", channel, specs)
                raw = d.home.parent / f"{engine}-raw-{k}"

                def ours(project: Path = project) -> None:
                    elapsed, view = d.warm_project(project)
                    names_of[project] = view["name"]
                    new_ms.append(elapsed)

                def theirs(specs: list[str] = specs, raw: Path = raw) -> None:
                    raw_ms.append(raw_create(mm, raw_home, channel, raw, specs, dry_run=False))

                for step in (ours, theirs) if k % 2 == 0 else (theirs, ours):
                    step()
                # an edit that keeps the resolution (a new spec_key, the same env): a constraint it meets
                edited = [f"{specs[0]} >=0", *specs[1:]]
                write(project, channel, edited)
                started = time.perf_counter()
                d.client.post(f"/v1/envs/{names_of[project]}/warm", {})
                resolve_ms.append((time.perf_counter() - started) * 1000)
                raw_solve_ms.append(raw_create(mm, raw_home, channel, d.home.parent / "dry", edited, dry_run=True))
            out[engine] = {"new_env_ms": med(new_ms), "raw_create_ms": med(raw_ms), "resolve_ms": med(resolve_ms),
                           "raw_dry_run_ms": med(raw_solve_ms), "rounds": reps}
            assert d.stop() == 0
    return out


def main() -> int:
    """Rows 5-6 alone (bench_core.py runs them with everything else): ``bench_engines.py [--quick]``."""
    import json

    from common import parse_args, progress, workspace

    from provisiond.testing.channel import build_channel, generated_packages

    args = parse_args(__doc__, quick="fewer packages and rounds (smoke run)")
    n_pkgs, n_files, reps = (40, 20, 3) if args.quick else (100, 50, 9)
    say = progress(args.json)
    with workspace(args, "pve-") as (ws, _):
        pkgs = generated_packages(n_pkgs, n_files)
        channel = build_channel(ws / "channel-build", pkgs)
        say("new envs (every package but one leaf) ...")
        out = {"engines": bench_engines(ws / "engines", channel, pkgs, reps)}
        say("new envs (one leaf) ...")
        out["engines_small"] = bench_engines(ws / "engines", channel, pkgs, reps, small=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, result in out.items():
            for variant, v in result.items():
                if isinstance(v, dict):
                    print(f"{key:14} {variant:22} new env {v['new_env_ms']:7.1f} ms / raw {v['raw_create_ms']:7.1f} ms"
                          f" = {v['new_env_ms'] / v['raw_create_ms']:.2f}x;  re-solve {v['resolve_ms']:6.1f} ms / "
                          f"raw dry-run {v['raw_dry_run_ms']:6.1f} ms = {v['resolve_ms'] / v['raw_dry_run_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    from common import run

    run(main)
