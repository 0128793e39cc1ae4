#!/usr/bin/env python3
"""Issue 3 benchmark: what the bash prompt hook costs per prompt, against no hook, direnv and `activate`.

    .venv/bin/python benchmarks/bench_hooks.py [--quick] [--rounds N] [--tmp DIR] [--json] [--keep]

Builds a real local channel, starts its own provisiond (``python -m provisiond``) on a private store,
state dir and socket, builds one project's env, then times prompts inside bash processes, one per
column and round, and removes it all at the end. benchmarks/README.md ("Shell hooks") says what
each row measures.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import BenchDaemon as Daemon
from common import filesystem, parse_args, progress, run, workspace

from provisiond.testing.channel import build_channel, demo_packages

BASH = shutil.which("bash") or "/bin/bash"
DIRENV = shutil.which("direnv")

COLUMNS = ("none", "provisiond", "direnv", "activate")
HEADS = {"none": "no hook", "provisiond": "provisiond hook", "direnv": "direnv", "activate": "activate-eval"}
CASES = ("outside", "walk", "same", "enter", "leave")
LABELS = {"outside": "no project (prompt again)", "walk": "cd outside projects (walk to /)",
          "same": "same project (prompt again)", "enter": "entering a project (cd in)",
          "leave": "leaving a project (cd out)"}
FAST = ("outside", "same")  # the fast path: $PWD unchanged, nothing to do
TARGET_OVER_US = 1000.0  # the fast path within 1 ms of no hook
TARGET_VS_DIRENV = 10.0  # and at least 10x cheaper than direnv
# Iterations per bash process (one column, one round). Steady cases: batches x prompts per batch,
# reported as the median of batch means; cd cases: single timed prompts.
PLAN = {  # column: (batches, prompts per batch, cd pairs)
    "none": (10, 500, 200), "provisiond": (10, 500, 200),
    "direnv": (5, 10, 20), "activate": (3, 2, 4),
}
QUICK_PLAN = {"none": (5, 200, 50), "provisiond": (5, 200, 50), "direnv": (3, 5, 8), "activate": (2, 1, 2)}


def setup(ws: Path, d: Daemon) -> dict:
    """One project (hello + `variables:` + `.env`), built and activated by the daemon; plain dirs beside it."""
    channel = build_channel(ws / "channel", demo_packages())
    work = ws / "work"
    project, plain = work / "nlp", work / "plain"
    for directory in (project / "src", plain / "a", plain / "b", ws / "home"):
        directory.mkdir(parents=True)
    (project / "environment.yml").write_text(
        f"name: nlp-bench\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - hello\n"
        "variables:\n  MODEL_DIR: /data/models\n")
    (project / ".env").write_text("HF_TOKEN=hf_example_not_a_real_token\n")
    d.ctl("watch", str(project))
    view = json.loads(d.ctl("warm", str(project), "--json"))
    stamp = d.state / "projects" / str(project).lstrip("/") / ".provisiond" / "stamp"
    if not stamp.is_file():
        raise RuntimeError(f"the daemon wrote no activation for {project} ({stamp} is missing)")
    act = json.loads(d.ctl("activate", str(project), "--shell", "json"))
    hook = ws / "hook.bash"
    hook.write_text(d.ctl("hook", "bash"))
    # direnv: an .envrc exporting the same variables (and running the same activate.d scripts).
    lines = ["# the variables `provisionctl activate --shell json` lists for this project"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(act["set"].items())]
    lines += [f"PATH_add {shlex.quote(p)}" for p in act["path_prepend"]]
    lines += [f". {shlex.quote(s)}" for s in act["scripts"]]
    (project / ".envrc").write_text("\n".join(lines) + "\n")
    direnv_hook = None
    if DIRENV:
        direnv_hook = ws / "direnv.bash"
        direnv_hook.write_text(subprocess.run([DIRENV, "hook", "bash"], capture_output=True, text=True, check=True,
                                              env=shell_env(ws, d)).stdout)
        subprocess.run([DIRENV, "allow", str(project)], check=True, env=shell_env(ws, d), capture_output=True)
    return {"project": project, "plain": plain, "hook": hook, "direnv_hook": direnv_hook, "stamp": stamp,
            "generation": stamp.read_text().strip(), "prefix": view["prefix"], "activation": act}


def shell_env(ws: Path, d: Daemon) -> dict[str, str]:
    """The environment of every bash process: a small login-like one; direnv's log lines off."""
    daemon = d.environ()
    return {"HOME": str(ws / "home"), "PATH": "/usr/bin:/bin", "TERM": "dumb", "LANG": "C.UTF-8",
            **{k: daemon[k] for k in ("PROVISIOND_STATE", "PROVISIOND_CONFIG")}, "DIRENV_LOG_FORMAT": ""}


# Prompting again in one place ({case}): warm-up prompts, then {batches} timed batches of {n} prompts.
STEADY = r"""eval "$PROMPT_COMMAND"
for ((i = 0; i < {n}; i++)); do eval "$PROMPT_COMMAND"; done
for ((b = 0; b < {batches}; b++)); do
  t0=${{EPOCHREALTIME//[!0-9]/}}
  for ((i = 0; i < {n}; i++)); do eval "$PROMPT_COMMAND"; done
  t1=${{EPOCHREALTIME//[!0-9]/}}
  out+=("{case} $((t1 - t0)) {n}")
done"""

# The timed part. Runs at the top level of a non-interactive bash, as bash runs PROMPT_COMMAND: it
# evaluates the string once per prompt. `now` is microseconds since the epoch (builtins only).
SCRIPT = r"""
set +H
cd -- {plain}
{install}
if [[ ${{PROMPT_COMMAND@a}} == *a* || -z ${{PROMPT_COMMAND-}} ]]; then
  echo "error: PROMPT_COMMAND is not a non-empty string: $(declare -p PROMPT_COMMAND)"; exit 3
fi
out=()
check() {{ out+=("check $1 $2=${{!2-<unset>}}"); }}

# no project: prompt again in the same dir outside any project
{outside}
check outside CONDA_DEFAULT_ENV

# cd between two dirs outside projects: the walk up to /
for ((r = 0; r < {pairs}; r++)); do
  cd -- a; t0=${{EPOCHREALTIME//[!0-9]/}}; eval "$PROMPT_COMMAND"; t1=${{EPOCHREALTIME//[!0-9]/}}
  cd -- ../b; t2=${{EPOCHREALTIME//[!0-9]/}}; eval "$PROMPT_COMMAND"; t3=${{EPOCHREALTIME//[!0-9]/}}
  cd -- ..
  out+=("walk $((t1 - t0)) 1" "walk $((t3 - t2)) 1")
done
eval "$PROMPT_COMMAND"

# entering and leaving: cd in, prompt (timed), cd out, prompt (timed)
for ((r = 0; r < {pairs}; r++)); do
  cd -- {project}; t0=${{EPOCHREALTIME//[!0-9]/}}; eval "$PROMPT_COMMAND"; t1=${{EPOCHREALTIME//[!0-9]/}}
  if ((r == 0)); then for v in CONDA_DEFAULT_ENV MODEL_DIR HF_TOKEN HELLO_ACTIVATED CONDA_SHLVL; do check enter $v; done; fi
  cd -- {plain}; t2=${{EPOCHREALTIME//[!0-9]/}}; eval "$PROMPT_COMMAND"; t3=${{EPOCHREALTIME//[!0-9]/}}
  if ((r == 0)); then for v in CONDA_DEFAULT_ENV MODEL_DIR; do check leave $v; done; fi
  out+=("enter $((t1 - t0)) 1" "leave $((t3 - t2)) 1")
done

# same project: prompt again inside the active project
cd -- {project}
{same}
for v in CONDA_DEFAULT_ENV MODEL_DIR HF_TOKEN CONDA_SHLVL; do check same $v; done
case $PATH in {prefix_bin}:*) out+=("check same PATH=prefixed") ;; *) out+=("check same PATH=$PATH") ;; esac
printf '%s\n' "${{out[@]}}"
"""


def install_line(column: str, env: dict, d: Daemon) -> str:
    q = shlex.quote
    if column == "none":
        return "__bench_no_hook() { :; }\nPROMPT_COMMAND=__bench_no_hook"
    if column == "provisiond":
        return f". {q(str(env['hook']))}"
    if column == "direnv":
        return f". {q(str(env['direnv_hook']))}"
    # A naive hook: ask provisionctl at every prompt (outside projects it fails: still one process).
    ctl = " ".join(q(a) for a in d.ctl_argv())
    return "PROMPT_COMMAND=" + q(f'eval "$({ctl} activate "$PWD" --shell bash 2>/dev/null)"')


def run_column(column: str, env: dict, d: Daemon, ws: Path, plan: tuple[int, int, int]) -> tuple[dict, dict]:
    batches, n, pairs = plan
    script = SCRIPT.format(plain=shlex.quote(str(env["plain"])), project=shlex.quote(str(env["project"])),
                           install=install_line(column, env, d), pairs=pairs,
                           outside=STEADY.format(case="outside", batches=batches, n=n),
                           same=STEADY.format(case="same", batches=batches, n=n),
                           prefix_bin=shlex.quote(env["prefix"] + "/bin"))
    path = ws / f"bench-{column}.bash"
    path.write_text(script)
    proc = subprocess.run([BASH, "--norc", "--noprofile", str(path)], capture_output=True, text=True,
                          env=shell_env(ws, d), cwd=env["plain"], timeout=1800)
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"the {column} column failed ({proc.returncode}):\n{proc.stderr}{proc.stdout[-2000:]}")
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    checks: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "check":
            key, _, value = rest.partition("=")
            checks[key.replace(" ", ".")] = value
        else:
            total, count = rest.split()
            samples[kind].append(int(total) / int(count))
    return samples, checks


def expected_checks(column: str, env: dict) -> dict[str, str]:
    """What each column must have done: proof that it really activated (a fast no-op would be a lie)."""
    active = {"CONDA_DEFAULT_ENV": "nlp-bench", "MODEL_DIR": "/data/models", "HF_TOKEN": "hf_example_not_a_real_token"}
    if column == "none":
        return {"enter.CONDA_DEFAULT_ENV": "<unset>", "same.CONDA_DEFAULT_ENV": "<unset>"}
    want = {f"enter.{k}": v for k, v in active.items()} | {f"same.{k}": v for k, v in active.items()}
    want |= {"outside.CONDA_DEFAULT_ENV": "<unset>", "enter.HELLO_ACTIVATED": "1", "enter.CONDA_SHLVL": "1",
             "same.CONDA_SHLVL": "1", "same.PATH": "prefixed"}
    if column != "activate":  # the naive per-prompt activate never deactivates
        want |= {"leave.CONDA_DEFAULT_ENV": "<unset>", "leave.MODEL_DIR": "<unset>"}
    return want


def med(samples: list[float]) -> float | None:
    return common.med(samples) if samples else None


def fmt(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:,.1f}" if us < 100 else f"{us:,.0f}"


def table(r: dict) -> str:
    res = r["results"]
    head = ["per prompt, µs", *(HEADS[c] for c in COLUMNS), "hook - none", "direnv / hook", "targets"]
    rows = [head]
    for case in CASES:
        cells = [LABELS[case], *(fmt(res[c].get(case)) for c in COLUMNS)]
        none, ours, direnv = res["none"][case], res["provisiond"][case], res["direnv"].get(case)
        over = ours - none
        ratio = direnv / ours if direnv is not None else None
        cells += [f"{over:+,.1f}", f"{ratio:,.0f}x" if ratio is not None else "-"]
        checks = []
        if case in FAST:
            checks.append(f"<=1 ms over: {'ok' if over <= TARGET_OVER_US else 'MISS'}")
        if ratio is not None:
            checks.append(f">=10x: {'ok' if ratio >= TARGET_VS_DIRENV else 'MISS'}")
        cells.append(", ".join(checks) or "-")
        rows.append(cells)
    widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) if i in (0, len(head) - 1) else v.rjust(w)
                       for i, (v, w) in enumerate(zip(x, widths))).rstrip() for x in rows]
    p = r["plan"]
    notes = [
        f"bash {r['bash']}; direnv {r['direnv'] or 'NOT INSTALLED (apt-get install -y direnv): column skipped'}; "
        f"{os.cpu_count()} cpus; python {sys.version.split()[0]}; {r['rounds']} rounds (each: one bash process per "
        f"column, in rotating order); work dir on {r['filesystem']}.",
        "Every cell is a median in µs per prompt, timed with bash's EPOCHREALTIME in one bash process that "
        "evaluates PROMPT_COMMAND as bash does before a prompt. Prompting again: median of batch means "
        f"(batches of {', '.join(f'{c} {p[c][1]}' for c in COLUMNS)} prompts); cd rows: single prompts, timed "
        f"right after the cd ({', '.join(f'{c} {p[c][2]}' for c in COLUMNS)} cd in/out pairs per round).",
        "no hook: PROMPT_COMMAND is an empty function. provisiond hook: `provisionctl hook bash`. direnv: "
        "`direnv hook bash` with an allowed .envrc exporting the same variables (the project's `activate --shell "
        "json`: set, PATH_add, activate.d). activate-eval: PROMPT_COMMAND runs `eval \"$(provisionctl activate "
        "\"$PWD\" --shell bash)\"` (outside a project that command fails: still one process; it never "
        "deactivates).",
        "hook - none: what the provisiond hook adds to a prompt. direnv / hook: direnv's time over the "
        "provisiond hook's, whole prompts. Targets (issue 3): the fast path (prompting again, in or out of a "
        "project) within 1 ms of no hook; at least 10x cheaper than direnv.",
    ]
    wrapped = [line for n in notes for line in textwrap.wrap(n, 110, subsequent_indent="   ")]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", *wrapped])


def main() -> int:
    args = parse_args(__doc__, quick="fewer prompts and rounds (smoke run)", more=lambda ap: ap.add_argument(
        "--rounds", type=int, help="bash processes per column (default 5, --quick 2)"))
    say = progress(args.json)
    version = subprocess.run([BASH, "-c", 'echo "${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}.${BASH_VERSINFO[2]}"'],
                             capture_output=True, text=True).stdout.strip()
    if not version or int(version.split(".")[0]) < 5:
        print(f"bash 5 or newer is needed (EPOCHREALTIME); found {version or 'none'}", file=sys.stderr)
        return 2
    direnv_version = subprocess.run([DIRENV, "version"], capture_output=True, text=True).stdout.strip() \
        if DIRENV else None
    if not DIRENV:
        print("direnv is not installed (apt-get install -y direnv): the direnv column is skipped", file=sys.stderr)
    plan = QUICK_PLAN if args.quick else PLAN
    rounds = args.rounds or (2 if args.quick else 5)
    columns = [c for c in COLUMNS if c != "direnv" or DIRENV]
    with workspace(args, "pvh-", socket_dir=True) as (ws, short), Daemon(ws, short / "d.sock") as d:
        say(f"work dir {ws} ({filesystem(ws)})")
        d.start()
        say("building the project's env ...")
        env = setup(ws, d)
        samples = {c: {case: [] for case in CASES} for c in columns}
        for k in range(rounds):
            order = columns[k % len(columns):] + columns[:k % len(columns)]
            say(f"round {k + 1}/{rounds}: {' '.join(order)}")
            for column in order:
                got, checks = run_column(column, env, d, ws, plan[column])
                wrong = {key: (checks.get(key), want) for key, want in expected_checks(column, env).items()
                         if checks.get(key) != want}
                if wrong:
                    raise RuntimeError(f"the {column} column did not do its job: {wrong} (got, wanted)")
                for case in CASES:
                    samples[column][case] += got[case]
        results = {c: ({case: med(samples[c][case]) for case in CASES} if c in columns else {}) for c in COLUMNS}
        stamp_unchanged = env["stamp"].read_text().strip() == env["generation"]
        if not stamp_unchanged:
            raise RuntimeError("the project's activation changed during the run: the numbers mix in re-activations")
        r = {"quick": args.quick, "rounds": rounds, "bash": version, "direnv": direnv_version,
             "filesystem": filesystem(ws), "plan": {c: plan[c] for c in COLUMNS}, "units": "µs per prompt (median)",
             "results": results,
             "samples": {c: {case: len(samples[c][case]) for case in CASES} for c in columns},
             "provisiond_over_none_us": {case: round(results["provisiond"][case] - results["none"][case], 1)
                                         for case in CASES},
             "direnv_over_provisiond": ({case: round(results["direnv"][case] / results["provisiond"][case], 1)
                                         for case in CASES} if DIRENV else None)}
        r["targets_met"] = all(r["provisiond_over_none_us"][c] <= TARGET_OVER_US for c in FAST) and (
            not DIRENV or all(v >= TARGET_VS_DIRENV for v in r["direnv_over_provisiond"].values()))
        r["daemon_exit"] = d.stop()
        print(json.dumps(r, indent=2, ensure_ascii=False) if args.json else table(r))
        return 0 if r["daemon_exit"] == 0 else 1


if __name__ == "__main__":
    run(main)
