"""The trust fingerprint: what can run code changes it, a pure dependency edit does not."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from provisiond.daemon.trust import fingerprint, under_prefix, what_changed
from provisiond.domain.spec import load_spec

BASE = """name: p
channels:
  - conda-forge
dependencies:
  - python=3.12
  - numpy
  - pip:
    - -r requirements.txt
    - -e ./lib
variables:
  MODEL_DIR: /data
"""


def project(tmp_path: Path, text: str = BASE) -> Path:
    (tmp_path / "lib").mkdir(parents=True, exist_ok=True)
    (tmp_path / "lib" / "pyproject.toml").write_text("[project]\nname = 'lib'\n")
    (tmp_path / "requirements.txt").write_text("rich\n")
    (tmp_path / ".env").write_text("TOKEN=one\n")
    (tmp_path / "environment.yml").write_text(text)
    return tmp_path


def digest(directory: Path) -> tuple[str, dict[str, str]]:
    fp = fingerprint(load_spec(directory / "environment.yml"), str(directory), directory / ".env")
    return fp.digest, dict(fp.parts)


def test_a_pure_dependency_edit_and_a_rotated_secret_keep_the_fingerprint(tmp_path: Path) -> None:
    before, _ = digest(project(tmp_path))
    (tmp_path / "environment.yml").write_text(BASE.replace("  - numpy\n", "  - numpy>=2\n  - scipy\n")
                                              .replace("name: p", "name: renamed") + "# a comment\n")
    (tmp_path / ".env").write_text("TOKEN=two  # rotated\n")
    assert digest(tmp_path)[0] == before


@pytest.mark.parametrize(("edit", "said"), [
    (lambda d: (d / "environment.yml").write_text(BASE.replace("conda-forge", "https://evil.example/ch")),
     "its environment.yml changed: channels"),
    (lambda d: (d / "environment.yml").write_text(BASE.replace("  - conda-forge\n", "  - conda-forge\n  - nodefaults\n")),
     "its environment.yml changed: channels"),
    (lambda d: (d / "environment.yml").write_text(BASE.replace("    - -e ./lib\n", "    - -e ./lib\n    - -e .\n")),
     "its environment.yml changed: pip: section"),
    (lambda d: (d / "environment.yml").write_text(BASE.replace("/data", "/other")),
     "its environment.yml changed: variables:"),
    (lambda d: (d / "requirements.txt").write_text("rich\n--index-url https://evil.example/simple\n"),
     "requirements.txt changed"),
    (lambda d: (d / "lib" / "pyproject.toml").write_text("[build-system]\nbuild-backend = 'evil'\n"),
     "lib/pyproject.toml changed"),
    (lambda d: (d / "lib" / "setup.py").write_text("import os; os.system('id')\n"),
     "lib/setup.py changed"),
    (lambda d: (d / ".env").write_text("TOKEN=one\nPYTHONSTARTUP=/tmp/x.py\n"),
     "its environment.yml changed: .env names"),
])
def test_what_can_run_code_changes_the_fingerprint(tmp_path: Path, edit, said: str) -> None:
    before, parts = digest(project(tmp_path))
    edit(tmp_path)
    after, now = digest(tmp_path)
    assert after != before
    assert what_changed(parts, now, str(tmp_path), "environment.yml") == said


def test_the_fingerprint_is_keyed_to_the_path(tmp_path: Path) -> None:
    one, two = project(tmp_path / "one"), project(tmp_path / "two")
    assert digest(one)[1] != {} and digest(one)[0] != digest(two)[0]


def test_trusted_prefixes_match_whole_components() -> None:
    assert under_prefix("/home/me/work/p", ["/home/me/work"])
    assert under_prefix("/home/me/work", ["/home/me/work/"])
    assert not under_prefix("/home/me/workshop/p", ["/home/me/work"])
    assert not under_prefix("/home/me/work/p", [""])


def pip_project(tmp_path: Path, *lines: str) -> Path:
    (tmp_path / "lib").mkdir(parents=True, exist_ok=True)
    (tmp_path / "lib" / "setup.py").write_text("import versioneer\n")
    (tmp_path / "lib" / "versioneer.py").write_text("VERSION = '1'\n")
    (tmp_path / "wheels").mkdir(exist_ok=True)
    pip = "".join(f"    - {line!r}\n" for line in lines)
    (tmp_path / "environment.yml").write_text(f"name: p\nchannels: [conda-forge]\ndependencies:\n  - python\n"
                                              f"  - pip:\n{pip}")
    return tmp_path


@pytest.mark.parametrize(("line", "edit"), [
    ("--editable=./lib", lambda d: (d / "lib" / "setup.py").write_text("import os; os.system('id')\n")),
    ("-e./lib", lambda d: (d / "lib" / "setup.py").write_text("import os; os.system('id')\n")),
    ("lib @ file:./lib", lambda d: (d / "lib" / "setup.py").write_text("import os; os.system('id')\n")),
    ("-e ./lib", lambda d: (d / "lib" / "versioneer.py").write_text("import os; os.system('id')\n")),
    ("-f ./wheels", lambda d: (d / "wheels" / "evil-1.0.tar.gz").write_bytes(b"sdist")),
    ("--find-links=./wheels", lambda d: (d / "wheels" / "evil-1.0.tar.gz").write_bytes(b"sdist")),
])
def test_every_form_of_a_local_pip_source_is_fingerprinted(tmp_path: Path, line: str, edit) -> None:
    before, _ = digest(pip_project(tmp_path, line))
    edit(tmp_path)
    assert digest(tmp_path)[0] != before


def test_an_in_tree_build_backend_is_fingerprinted(tmp_path: Path) -> None:
    project = pip_project(tmp_path, "-e .")
    (project / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                            'backend-path = ["_build"]\n')
    (project / "_build").mkdir()
    (project / "_build" / "backend.py").write_text("def build_wheel(*a): pass\n")
    before, _ = digest(project)
    (project / "_build" / "backend.py").write_text("import os; os.system('id')\n")
    assert digest(project)[0] != before


def test_a_dependency_naming_its_own_channel_is_a_channel_edit(tmp_path: Path) -> None:
    before, parts = digest(project(tmp_path))
    (tmp_path / "environment.yml").write_text(BASE.replace("  - numpy\n", "  - https://evil.example/ch::numpy\n"))
    after, now = digest(tmp_path)
    assert after != before and what_changed(parts, now, str(tmp_path), "environment.yml") == \
        "its environment.yml changed: channels"
    (tmp_path / "environment.yml").write_text(BASE.replace("  - numpy\n", "  - conda-forge::numpy\n"))
    assert digest(tmp_path)[0] == before  # a channel already listed adds nothing


def test_a_fifo_or_a_device_in_the_project_is_never_read(tmp_path: Path) -> None:
    directory = project(tmp_path)
    (directory / ".env").unlink()
    os.mkfifo(directory / ".env")  # a read would block forever
    (directory / "requirements.txt").unlink()
    (directory / "requirements.txt").symlink_to("/dev/zero")  # a read would never end
    fp = fingerprint(load_spec(directory / "environment.yml"), str(directory), directory / ".env")
    assert fp.parts[f"file:{directory}/requirements.txt"] == "not a regular file"


def test_a_proc_file_that_reads_forever_is_hashed_by_what_stat_says(tmp_path: Path) -> None:
    """/proc/self/pagemap is a "regular" file of size 0 that reads ~256 GiB: never past st_size."""
    directory = pip_project(tmp_path, "-e ./lib")
    (directory / "lib" / "setup.py").unlink()
    (directory / "lib" / "setup.py").symlink_to("/proc/self/pagemap")
    (directory / ".env").symlink_to("/proc/self/pagemap")
    _digest, parts = digest(directory)  # returned at all: it used to read for minutes
    assert parts[f"file:{directory}/lib/setup.py"] == hashlib.sha256(b"0:").hexdigest()


@pytest.mark.parametrize("backend", ['["/"]', '[".."]', '["../.."]'])
def test_a_backend_path_outside_the_project_is_never_walked(tmp_path: Path, backend: str) -> None:
    directory = pip_project(tmp_path / "p", "-e .")
    (directory / "pyproject.toml").write_text(f'[build-system]\nbuild-backend = "b"\nbackend-path = {backend}\n')
    (tmp_path / "outside.py").write_text("x = 1\n")
    _digest, parts = digest(directory)
    assert all(key[5:].startswith(str(directory)) for key in parts if key.startswith("file:")), parts


def test_odd_requirement_lines_neither_fail_nor_read_strangers(tmp_path: Path) -> None:
    directory = pip_project(tmp_path, "-r req.txt", f"lib @ file://localhost{tmp_path}/lib",
                            "./lib; python_version < '3.99'")
    (directory / "req.txt").write_bytes(b"-r other\0.txt\n./lib\0x\npkg @ https://example.org/x.whl\n")
    before, parts = digest(directory)  # a NUL in a name used to raise ValueError (a 500)
    (directory / "lib" / "setup.py").write_text("import os; os.system('id')\n")
    assert digest(directory)[0] != before
    assert not any("example.org" in key for key in parts)
