"""provisiond/testing/micromamba.py: where the tests look for a micromamba, in order."""

from __future__ import annotations

import os
from pathlib import Path

from provisiond.testing.micromamba import SHARED_MICROMAMBA, find_test_micromamba


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 2.8.1\n")
    path.chmod(0o755)
    return path


def test_path_first_then_the_setting_then_shared(tmp_path: Path) -> None:
    on_path = executable(tmp_path / "bin" / "micromamba")
    configured = executable(tmp_path / "opt" / "mm")
    env = {"PATH": str(on_path.parent), "PROVISIOND_MICROMAMBA_PATH": str(configured)}
    assert find_test_micromamba(env) == on_path
    assert find_test_micromamba({**env, "PATH": str(tmp_path / "empty")}) == configured
    shared = find_test_micromamba({"PATH": str(tmp_path / "empty")})
    expected = SHARED_MICROMAMBA if os.access(SHARED_MICROMAMBA, os.X_OK) else None
    assert shared == expected


def test_a_file_that_cannot_run_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "mm").write_text("not executable")
    found = find_test_micromamba({"PATH": str(tmp_path / "empty"), "PROVISIOND_MICROMAMBA_PATH": str(tmp_path / "mm")})
    assert found != tmp_path / "mm"
