"""`provisionctl check` through the daemon (POST /v1/check) and without it: the same output, errors
and exit codes; and the daemon path imports neither ruamel nor rattler in the CLI (issue 14.2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.domain.test_identity import conda_lock_sha256, pixi_lock

GOOD = "name: x\nchannels: [conda-forge]\ndependencies:\n  - numpy >=1.26\n  - pip\n  - pip:\n      - requests\nvariables:\n  MODE: dev\n"
BROKEN = "name: x\nchannels: [conda-forge]\ndependencies:\n  - numpy\n  - ==bad\n"


def ctl(socket: Path, cwd: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """provisionctl as a user runs it: its own process, in ``cwd``, names relative to it."""
    proc = subprocess.run([sys.executable, "-m", "provisiond.cli", "--socket", str(socket), *args],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def both(daemon: Daemon, cwd: Path, *args: str) -> tuple[int, str, str]:
    """The answer through the daemon, checked equal to the one without it (a socket nobody serves)."""
    env = {**os.environ, **daemon.environ()}
    served = ctl(daemon.socket, cwd, *args, env=env)
    alone = ctl(daemon.socket.with_name("nobody.sock"), cwd, *args, env=env)
    assert served == alone, f"through the daemon:\n{served}\nwithout it:\n{alone}"
    return served


@pytest.fixture
def files(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "environment.yml").write_text(GOOD)
    (work / "broken.yml").write_text(BROKEN)
    (work / "conda-lock.yml").write_text(conda_lock_sha256())
    (work / "pixi.lock").write_text(pixi_lock(extra_env=True))
    return work


def test_check_says_the_same_through_the_daemon(daemon: Daemon, files: Path) -> None:
    code, out, err = both(daemon, files, "check", "environment.yml")
    assert code == 0 and err == "" and "numpy>=1.26" in out
    code, out, _err = both(daemon, files, "check", "environment.yml", "--json")
    spec = json.loads(out)
    assert code == 0 and spec["source"] == "environment.yml" and spec["project_dir"] == str(files)
    assert spec["variables"] == {"MODE": "dev"} and spec["pip"] == ["requests"]
    # the daemon answers it itself, with the same data
    status, answer = daemon.raw("POST", "/v1/check", {"file": "environment.yml",
                                                       "path": str(files / "environment.yml")})
    assert status == 200 and answer == spec


def test_a_broken_file_exits_65_at_its_line_and_column_either_way(daemon: Daemon, files: Path) -> None:
    code, out, err = both(daemon, files, "check", "broken.yml")
    assert code == 65 and out == "" and err.startswith("provisionctl: broken.yml:5:5: ")
    code, out, _err = both(daemon, files, "check", "broken.yml", "--json")
    assert code == 65 and json.loads(out)["error"]["code"] == "invalid-spec"
    code, _out, err = both(daemon, files, "check", "missing.yml")
    assert code == 65 and "missing.yml: no such file" in err
    code, _out, err = both(daemon, files, "check", "environment.yml", "-e", "small")
    assert code == 65 and "environment.yml: --environment is for pixi.lock files" in err


def test_lockfiles_and_a_pixi_environment_either_way(daemon: Daemon, files: Path) -> None:
    code, out, _err = both(daemon, files, "check", "conda-lock.yml")
    assert code == 0 and out.startswith("# conda-lock.yml: ok, conda-lock v1\n")
    code, out, _err = both(daemon, files, "check", "pixi.lock", "--json")
    report = json.loads(out)
    assert code == 0 and report["file"] == "pixi.lock" and report["environments"] == ["default", "small"]
    code, out, _err = both(daemon, files, "check", "-e", "small", "pixi.lock")
    assert code == 0 and "small / linux-64: 1 conda packages" in out and "default /" not in out
    code, _out, err = both(daemon, files, "check", "-e", "nope", "pixi.lock")
    assert code == 65 and "pixi.lock: no environment 'nope'" in err


def test_a_pipe_is_checked_from_its_text_either_way(daemon: Daemon, files: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not installed (process substitution)")
    env = {**os.environ, **daemon.environ()}
    answers = []
    for socket in (daemon.socket, daemon.socket.with_name("nobody.sock")):
        for name in ("environment.yml", "broken.yml"):
            command = (f"{sys.executable} -m provisiond.cli --socket {socket} check --json <(cat {name}); "
                       f"echo exit=$?")
            proc = subprocess.run(["bash", "-c", command], cwd=files, capture_output=True, text=True, env=env,
                                  timeout=60)
            answers.append((proc.stdout, proc.stderr))
    assert answers[:2] == answers[2:]
    (good, _), (bad, bad_err) = answers[:2]
    spec = json.loads(good.rsplit("exit=", 1)[0])
    assert good.endswith("exit=0\n") and spec["dependencies"] == ["numpy>=1.26", "pip"]
    assert spec["source"].startswith("/dev/fd/")
    assert bad.endswith("exit=65\n") and ":5:5: " in bad_err


def test_the_daemon_path_imports_no_ruamel_or_rattler(daemon: Daemon, files: Path) -> None:
    probe = ("import sys\nfrom provisiond.cli import commands\n"
             "code = commands.main(['--socket', sys.argv[1], 'check', sys.argv[2]])\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ruamel', 'rattler', 'aiohttp'))\n"
             "print(code, heavy, file=sys.stderr)\n")
    env = {**os.environ, **daemon.environ()}
    seen = {}
    for label, socket in (("served", daemon.socket), ("alone", daemon.socket.with_name("nobody.sock"))):
        proc = subprocess.run([sys.executable, "-c", probe, str(socket), "pixi.lock"], cwd=files,
                              capture_output=True, text=True, env=env, timeout=60)
        seen[label] = proc.stderr.strip().splitlines()[-1]
    assert seen["served"] == "0 []"
    assert seen["alone"].startswith("0 [") and "ruamel" in seen["alone"] and "rattler" in seen["alone"]


def test_check_requests_that_are_wrong_are_400(daemon: Daemon, files: Path) -> None:
    for body, field in (({"path": str(files / "environment.yml")}, "'file'"),
                        ({"file": "environment.yml", "path": "environment.yml"}, "absolute"),
                        ({"file": "x", "path": str(files), "content": 3}, "'content'"),
                        ({"file": "x", "path": str(files / "environment.yml"), "environment": 1}, "'environment'")):
        status, answer = daemon.raw("POST", "/v1/check", body)
        assert status == 400 and answer["error"]["code"] == "bad-request" and field in answer["error"]["message"]
    # a name no file can have: the text is still checked, and named as sent
    status, answer = daemon.raw("POST", "/v1/check", {"file": "../..", "path": "/x/..", "content": BROKEN})
    assert status == 400 and answer["error"]["code"] == "invalid-spec"
    assert answer["error"]["message"].startswith("../..:5:5: ")
