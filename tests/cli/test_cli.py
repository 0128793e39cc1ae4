"""provisionctl without a daemon: check, help, and the daemon-down path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.cli import commands as cli


def test_check_prints_the_normalised_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "environment.yml"
    f.write_text("name: nlp-exp\nchannels: [conda-forge, nodefaults]\ndependencies:\n"
                 "  - numpy >= 1.2\n  - pip\n  - pip:\n      - requests==2.31\nvariables:\n  MODE: dev\nextra: 1\n")
    assert cli.main(["check", str(f)]) == 0
    out = capsys.readouterr().out
    assert '  - "numpy>=1.2"' in out and '      - "requests==2.31"' in out and "nodefaults" in out
    assert "warning: " in out and "environment.yml:10:1" in out

    assert cli.main(["check", str(f), "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["channels"] == ["conda-forge"] and spec["nodefaults"] is True
    assert spec["variables"] == {"MODE": "dev"}


def test_check_reports_file_line_column_and_exits_65(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "environment.yml"
    f.write_text("name: x\ndependencies:\n  - numpy\n  - ==bad\n")
    assert cli.main(["check", str(f)]) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"provisionctl: {f}:4:5: ")
    assert "Traceback" not in err

    assert cli.main(["check", str(f), "--json"]) == 65
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "invalid-spec"


def test_check_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(tmp_path / "nope.yml")]) == 65
    assert "no such file" in capsys.readouterr().err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("watch", "warm", "create", "list", "check", "Exit codes"):
        assert command in out


def test_console_script_exits_through_os_exit_with_the_right_code(tmp_path: Path) -> None:
    f = tmp_path / "environment.yml"
    f.write_text("dependencies: [numpy\n")
    proc = subprocess.run([sys.executable, "-m", "provisiond.cli", "check", str(f)], capture_output=True, text=True)
    assert proc.returncode == os.EX_DATAERR
    assert proc.stderr.startswith(f"provisionctl: {f}:")


def test_scripts_pass_shellcheck() -> None:
    import shutil

    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt: shellcheck)")
    repo = Path(__file__).resolve().parents[2]
    names = [f"scripts/{n}" for n in ("run", "test", "demo", "_venv.sh", "cold-start") if (repo / "scripts" / n).exists()]
    proc = subprocess.run(["shellcheck", "-x", *names], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_local_file_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    # A socket path under a regular file: the connect fails with ENOTDIR, not a traceback.
    assert cli.main(["--socket", str(blocker / "x.sock"), "list"]) == os.EX_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("provisionctl: cannot connect to ") and "Traceback" not in err


def test_the_demo_runs_every_step_of_the_readme_walkthrough() -> None:
    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text()
    walkthrough = readme.split("## Five-minute walkthrough", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    steps = {line.split()[1] for line in walkthrough.splitlines() if line.startswith("provisionctl ")}
    steps |= {"hook"} if "provisionctl hook bash" in walkthrough else set()
    assert {"watch", "warm", "list", "create", "check", "hook", "allow", "export", "run"} <= steps
    demo = (repo / "scripts" / "demo").read_text()
    ran = {line.split()[1] for line in demo.splitlines() if line.startswith("provisionctl ")}
    ran |= {"hook"} if 'eval "$(provisionctl hook bash)"' in demo else set()
    assert steps <= ran, f"the demo skips {steps - ran}"


def test_the_readme_says_how_to_put_provisionctl_on_path() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("## ", 1)[0]
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in setup and "provisionctl completion" in setup
