"""provisionctl's start-up: every everyday command, whole process, against `python -c pass`.

Issue 14 part 2: each command within 1.5x of starting Python. A real daemon on a private store
serves one ready env (`hello` from the demo channel) and one project; each row is the median of
alternating runs of the console script and of `python -c pass` (same interpreter, bytecode
cached). `check FILE` goes to the daemon (POST /v1/check), which parses the file: it counts like
the others. Without a daemon (a socket nobody serves) provisionctl parses it itself with ruamel and
rattler's MatchSpec, whose imports alone (asyncio included, through rattler's package) cost several
times Python's start: that row is shown for information, with the import cost measured on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from common import CTL, ENV, BenchDaemon, med, parse_args, progress, run, workspace

from provisiond.testing.channel import build_channel, demo_packages

TARGET = 1.5


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return (time.perf_counter() - started) * 1000


def _import_ms(module: str) -> float:
    """One cold import of ``module`` in a fresh interpreter, timed inside it."""
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                                check=True).stdout)


def main() -> int:
    args = parse_args(__doc__, quick="fewer repetitions (smoke run)")
    reps = 8 if args.quick else 30
    say = progress(args.json)
    with workspace(args, "pvc-", socket_dir=True) as (ws, short), BenchDaemon(ws, short / "d.sock") as d:
        d.start()
        env = {**d.environ(), **ENV, "PROVISIOND_HOME": str(d.home), "PROVISIOND_SOCKET": str(d.socket),
               "PROVISIOND_STATE": str(ws / "state")}
        channel = build_channel(ws / "channel", demo_packages())
        project = ws / "nlp"
        project.mkdir()
        spec = project / "environment.yml"
        spec.write_text(f"name: nlp-exp\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - hello\n")
        (project / "src").mkdir()
        subprocess.run([*CTL, "warm", str(project)], env=env, check=True, capture_output=True)
        rows = {
            "--version": ["--version"],
            "list": ["list"],
            "list --json": ["list", "--json"],
            "show NAME": ["show", "nlp-exp"],
            "show . (from a subdirectory)": ["show", str(project / "src")],
            "status": ["status"],
            "warm NAME (ready)": ["warm", "nlp-exp"],
            "warm -q NAME (ready, not the fast path)": ["warm", "-q", "nlp-exp"],
            "completion (one Tab: names)": ["completion", "--complete", "2", "bash", "--", "provisionctl", "warm", ""],
            "check FILE (through the daemon)": ["check", str(spec)],
            "check FILE, no daemon (info: parses here)": ["--socket", str(short / "none.sock"), "check", str(spec)],
        }
        say(f"{len(rows)} commands x {reps} rounds ...")
        samples: dict[str, list[float]] = {label: [] for label in rows}
        python: list[float] = []
        for _ in range(reps):
            python.append(_time([sys.executable, "-c", "pass"], env))
            for label, argv in rows.items():
                samples[label].append(_time([*CTL, *argv], env))
        r = {"rounds": reps, "python_pass_ms": med(python), "commands": {k: med(v) for k, v in samples.items()},
             "imports_ms": {m: round(_import_ms(m), 1) for m in ("argparse", "json", "socket", "ruamel.yaml",
                                                                 "rattler")},
             "daemon_exit": d.stop()}
        print(json.dumps(r, indent=2) if args.json else table(r))
        return 0 if r["daemon_exit"] == 0 else 1


def table(r: dict) -> str:
    base = r["python_pass_ms"]
    head = f"{'provisionctl ...':<44}{'time':>9}{'python -c pass':>16}{'ratio':>7}{'target':>9}"
    lines = [head, "-" * (len(head) + 6)]
    for label, ms in r["commands"].items():
        ratio = ms / base
        info = "(info" in label
        verdict = "-" if info else ("ok" if ratio <= TARGET else "MISS")
        lines.append(f"{label:<44}{ms:>6.1f} ms{base:>13.1f} ms{ratio:>6.2f}x{'<= 1.5x':>9}  {verdict}")
    imports = ", ".join(f"{k} {v:.1f} ms" for k, v in r["imports_ms"].items())
    note = (f"Medians of {r['rounds']} alternating runs. Cold imports, each in a fresh interpreter: {imports}; "
            "provisionctl's usual path imports none of them (cli/argv.py, cli/jsontext.py, the client on _socket).")
    return "\n".join([*lines, "", *textwrap.wrap(note, 110)])


if __name__ == "__main__":
    run(main)
