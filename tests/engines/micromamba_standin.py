"""A stand-in for micromamba that replays recorded outputs (see test_micromamba_replay.py).

The tests copy this file to ``<dir>/micromamba`` with a shebang. Each run appends what it was
given (argv, environment, stdin, the ``--file`` contents) to ``<dir>/calls.jsonl``, then does
what ``<dir>/scenario.json`` says for its kind of call (``version``, ``info``, ``solve``,
``install``): replay stderr then stdout with an exit code, create the prefix first
(``create``), leave half a prefix and exit or die (``crash``), or hang (``hang``).
Standard library only: it runs as its own process, like the real binary.
"""

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def option(argv, *names):
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[i + 1]
    return None


def kind_of(argv):
    if argv[:1] == ["--version"]:
        return "version"
    if argv[:1] == ["info"]:
        return "info"
    if argv[:1] == ["create"]:
        return "solve" if "--dry-run" in argv else "install"
    return "other"


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def make_prefix(prefix, explicit, complete):
    """What micromamba leaves in a prefix: conda-meta records, history, linked files."""
    os.makedirs(os.path.join(prefix, "conda-meta"), exist_ok=True)
    os.makedirs(os.path.join(prefix, "bin"), exist_ok=True)
    urls = [line.split("#")[0] for line in (explicit or "").splitlines() if "://" in line]
    for url in urls if complete else urls[:1]:
        dist = url.rsplit("/", 1)[-1].replace(".tar.bz2", "").replace(".conda", "")
        with open(os.path.join(prefix, "conda-meta", dist + ".json"), "w") as f:
            json.dump({"url": url}, f)
    if complete:
        with open(os.path.join(prefix, "conda-meta", "history"), "w") as f:
            f.write("==> 2026-06-08 00:00:00 <==\n")


def hang(step):
    """Start a grandchild in our process group, say so, then never finish."""
    if step.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited through exec: only SIGKILL ends `sleep` too
    grandchild = subprocess.Popen(["sleep", "600"])
    write_atomic(os.path.join(HERE, "hang.pids"), json.dumps([os.getpid(), grandchild.pid]))
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    while True:
        time.sleep(60)


def main():
    argv = sys.argv[1:]
    with open(os.path.join(HERE, "scenario.json")) as f:
        step = json.load(f).get(kind_of(argv), {})
    explicit_path = option(argv, "--file", "-f")
    explicit = None
    if explicit_path:
        with open(explicit_path) as f:
            explicit = f.read()
    call = {"kind": kind_of(argv), "argv": argv, "env": dict(os.environ), "explicit": explicit,
            "stdin": os.path.realpath("/proc/self/fd/0")}
    with open(os.path.join(HERE, "calls.jsonl"), "a") as f:
        f.write(json.dumps(call) + "\n")

    prefix = option(argv, "-p", "--prefix") or ""
    action = step.get("action", "replay")
    if action == "hang":
        if step.get("half"):  # an install that linked some packages, then stalls
            make_prefix(prefix, explicit, complete=False)
        hang(step)
    if action in ("create", "crash"):
        make_prefix(prefix, explicit, complete=action == "create")
    for stream, key in ((sys.stderr, "stderr"), (sys.stdout, "stdout")):
        text = step.get(key + "_text", "")
        if step.get(key):
            with open(step[key]) as f:
                text = f.read()
        for old, new in step.get("replace", {}).items():
            text = text.replace(old, new.replace("@PREFIX@", prefix))
        stream.write(text)
        stream.flush()
    if step.get("signal"):
        os.kill(os.getpid(), step["signal"])
    sys.exit(step.get("rc", 0))


main()
