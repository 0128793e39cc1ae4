"""The solve-cache key holds what changes the answer, as the daemon computes it (Provisioner.spec_key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.config.settings import load_settings
from provisiond.daemon.provisioner import Provisioner
from provisiond.domain.spec import parse_spec
from provisiond.engines.rattler import RattlerEngine
from provisiond.engines.virtual import VirtualPackages
from provisiond.store.store import Store

SPEC = "channels:\n  - conda-forge\ndependencies:\n  - python\n"


def key_of(tmp_path: Path, text: str = SPEC, **settings: str) -> str:
    values = {"home": str(tmp_path / "home"), "socket": "/tmp/pvd-unused.sock", "engine": "rattler", **settings}
    s = load_settings(values, environ={}, config_file=tmp_path / "none.toml")
    with Store.open(s.paths) as store:
        return Provisioner(store, RattlerEngine(s), s).lifecycle.spec_key(parse_spec(text))


def test_settings_that_change_the_answer_change_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONDA_OVERRIDE_GLIBC", raising=False)
    base = key_of(tmp_path)
    assert key_of(tmp_path) == base
    # conda-forge is another channel behind another alias.
    assert key_of(tmp_path, channel_alias="https://mirror.example/conda/") != base
    assert key_of(tmp_path, text=SPEC + "channel_priority: flexible\n") != base
    monkeypatch.setenv("CONDA_OVERRIDE_GLIBC", "2.17")
    assert key_of(tmp_path) != base


def test_conda_override_reaches_the_rattler_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDA_OVERRIDE_GLIBC", "2.17")
    s = load_settings({"home": str(tmp_path / "home"), "socket": "/tmp/pvd-unused.sock"}, environ={},
                      config_file=tmp_path / "none.toml")
    assert "__glibc=2.17=0" in RattlerEngine(s).virtual_packages()


def test_virtual_packages_are_detected_again_when_the_system_changed() -> None:
    driver = ["550.54"]
    detections = [["__cuda=12.6=0", "__unix=0=0"]]
    packages = VirtualPackages(["__cuda=12.4=0", "__unix=0=0"], lambda: detections.pop(),
                               probe=lambda: (driver[0],))
    assert packages.current() == ["__cuda=12.4=0", "__unix=0=0"]
    assert detections  # nothing changed: no detection
    driver[0] = "560.28"  # a driver update
    assert packages.current() == ["__cuda=12.6=0", "__unix=0=0"]
    assert packages.current() == ["__cuda=12.6=0", "__unix=0=0"]


def test_detection_in_a_fresh_process_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from provisiond.engines.virtual import detect, detect_in_subprocess

    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "12.4")
    assert "__cuda=12.4=0" in detect()
    assert detect_in_subprocess(os.environ) == detect()
