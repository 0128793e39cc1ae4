"""`domain/checks.py::check_named`: one answer for `provisionctl check`, wherever the file is read
(in place, or a pipe's text from a private copy), naming the file as the user wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.domain.checks import check_named
from provisiond.domain.errors import SpecError
from tests.domain.test_identity import pixi_lock

BROKEN = "name: x\nchannels: [conda-forge]\ndependencies:\n  - numpy\n  - ==bad\n"


def test_answers_and_errors_name_the_file_as_given(tmp_path: Path) -> None:
    f = tmp_path / "environment.yml"
    f.write_text("name: x\nchannels: [conda-forge]\ndependencies: [numpy]\n")
    spec = check_named("environment.yml", str(f), None, None, ["conda-forge"])
    assert spec["source"] == "environment.yml" and spec["project_dir"] == str(tmp_path)
    f.write_text(BROKEN)
    with pytest.raises(SpecError) as info:
        check_named("environment.yml", str(f), None, None, ["conda-forge"])
    assert info.value.message.startswith("environment.yml:5:5: ") and str(tmp_path) not in info.value.message


def test_text_is_checked_from_a_copy_named_like_the_file(tmp_path: Path) -> None:
    # the pipe's directory stands for the copy's: the same project_dir as a check in place
    spec = check_named("/dev/fd/63", "/dev/fd/63", "name: x\nchannels: [c]\ndependencies: [a]\n", None, [])
    assert spec["source"] == "/dev/fd/63" and spec["project_dir"] == "/dev/fd"
    with pytest.raises(SpecError) as info:
        check_named("<(cat broken.yml)", "/dev/fd/63", BROKEN, None, [])
    assert info.value.message.startswith("<(cat broken.yml):5:5: ")
    # a pixi.lock is told by its name, so the copy keeps it
    report = check_named("x/pixi.lock", str(tmp_path / "x" / "pixi.lock"), pixi_lock(extra_env=True), "small", [])
    assert report["file"] == "x/pixi.lock" and [p["environment"] for p in report["packages"]] == ["small"]
    assert not list(tmp_path.iterdir())  # nothing written beside the named path
