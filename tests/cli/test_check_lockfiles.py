"""`provisionctl check` of lockfiles (issue 12.4): format, platforms, environments, counts, problems, exit 65."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisiond.cli import commands as cli
from tests.conftest import SHARED, needs_shared
from tests.domain.test_identity import conda_lock_sha256, explicit_md5, pixi_lock

LOCKS = SHARED / "data" / "locks"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main(["check", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_check_reports_each_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {"spec.txt": explicit_md5(), "conda-lock.yml": conda_lock_sha256(), "pixi.lock": pixi_lock(extra_env=True)}
    reports = {}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        code, reports[name] = run(capsys, str(tmp_path / name))
        assert code == 0, reports[name]
    assert reports["spec.txt"]["format"] == "@EXPLICIT" and reports["spec.txt"]["platforms"] == ["linux-64"]
    assert reports["conda-lock.yml"]["format"] == "conda-lock v1"
    pixi = reports["pixi.lock"]
    assert pixi["format"] == "pixi.lock" and pixi["environments"] == ["default", "small"]
    assert [(p["environment"], p["conda"]) for p in pixi["packages"]] == [("default", 3), ("small", 1)]
    keys = {r["packages"][0]["env_key"] for r in reports.values()}
    assert len(keys) == 1  # one identity across the three formats
    code, only = run(capsys, str(tmp_path / "pixi.lock"), "--environment", "small")
    assert code == 0 and [p["environment"] for p in only["packages"]] == ["small"]
    assert cli.main(["check", str(tmp_path / "pixi.lock")]) == 0
    text = capsys.readouterr().out
    assert "pixi.lock" in text and "environments: default, small" in text and "small / linux-64: 1 conda" in text


def test_a_broken_lockfile_exits_65_with_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "spec.txt"
    f.write_text(explicit_md5() + "https://conda.anaconda.org/conda-forge/linux-64/libzlib-1.2-0.conda\n")
    code, answer = run(capsys, str(f))
    assert code == 65 and answer["error"]["code"] == "invalid-spec"
    assert "two versions of libzlib" in answer["error"]["message"]
    bad = tmp_path / "conda-lock.yml"
    bad.write_text(conda_lock_sha256().replace("platform: linux-64", "platform: osx-64", 1))
    code, answer = run(capsys, str(bad))
    assert code == 65 and "packages for osx-64, which metadata.platforms does not list" in answer["error"]["message"]
    broken = tmp_path / "broken-lock.yml"
    broken.write_text("version: 1\npackage: [\n")
    code, answer = run(capsys, str(broken))
    assert code == 65 and "not valid YAML" in answer["error"]["message"]
    assert cli.main(["check", str(tmp_path / "pixi.lock"), "-e", "x"]) == 65  # no such file: still 65


def test_explicit_is_no_longer_a_yaml_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "requirements.lock"
    f.write_text(explicit_md5())
    code, report = run(capsys, str(f))
    assert code == 0 and report["packages"][0]["conda"] == 3


@needs_shared
@pytest.mark.parametrize(("name", "fmt", "platforms", "count"), [
    ("AlexsLemonade__OpenScPCA-analysis__analyses__cell-type-ewings__conda-lock.yml", "conda-lock v1", None, 182),
    ("CHTC__templates-GPUs__pixi__pixi.lock", "pixi.lock", None, 121),
    ("01bbae__ML__spec-file.txt", "@EXPLICIT", ["osx-arm64"], None),
    ("jupyterhub__repo2docker__repo2docker__buildpacks__conda__environment.py-3.12-linux-64.lock", "@EXPLICIT",
     ["linux-64"], 175),
])
def test_check_real_lockfiles(capsys: pytest.CaptureFixture[str], name: str, fmt: str,
                              platforms: list[str] | None, count: int | None) -> None:
    code, report = run(capsys, str(LOCKS / name))
    assert code == 0, report
    assert report["format"] == fmt
    if platforms is not None:
        assert report["platforms"] == platforms
    linux = [p for p in report["packages"] if p["platform"] == "linux-64"]
    if count is not None:
        assert linux[0]["conda"] == count


def test_check_of_real_world_environment_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "environment.yml"
    f.write_bytes("name: ps\r\nchannels:\r\n  - defaults\r\ndependencies:\r\n  - python=3.11\r\n".encode("utf-16"))
    code, report = run(capsys, str(f))
    assert code == 0 and report["name"] == "ps"
    assert report["resolved_channels"] == ["https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r"]
    assert cli.main(["check", str(f)]) == 0
    assert "# channels, as solved: https://repo.anaconda.com/pkgs/main, https://repo.anaconda.com/pkgs/r" in \
        capsys.readouterr().out
    f.write_text("name: x\ndependencies:\n<<<<<<< HEAD\n  - numpy\n=======\n  - scipy\n>>>>>>> main\n")
    code, answer = run(capsys, str(f))
    assert code == 65 and answer["error"]["message"].endswith("environment.yml:3:1: unresolved merge conflict "
                                                              "(a '<<<<<<<' marker)")
