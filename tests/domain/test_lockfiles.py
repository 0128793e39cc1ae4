"""Lockfile readers on real files from ../shared, and one identity across formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.domain.errors import SpecError
from provisiond.domain.exports import conda_lock, explicit, export
from provisiond.domain.lockfiles import kind_of, load_lockfile
from provisiond.domain.urls import mask
from tests.conftest import SHARED, needs_shared

LOCKS = SHARED / "data" / "locks"
SAMPLES = SHARED / "contract" / "samples"
ZLIB_CONDA_LOCK = SAMPLES / "conda-lock" / "example-zlib-conda-lock.yml"
ZLIB_PIXI = SAMPLES / "rattler" / "pixi-lock" / "v7-converted-from-conda-lock-v1-by-py-rattler-0.28.0.lock"


@needs_shared
@pytest.mark.parametrize(("path", "kind", "count"), [
    (LOCKS / "AlexsLemonade__OpenScPCA-analysis__analyses__cell-type-ewings__conda-lock.yml", "conda-lock", 182),
    (LOCKS / "CHTC__templates-GPUs__pixi__pixi.lock", "pixi", 121),
    (LOCKS / "jupyterhub__repo2docker__repo2docker__buildpacks__conda__environment.py-3.12-linux-64.lock",
     "explicit", 175),
    (SAMPLES / "micromamba" / "spec-files" / "explicit_env_linux.txt", "explicit", 15),
    (SAMPLES / "micromamba" / "lockfiles" / "test-env-pip-lock.yaml", "conda-lock", 23),
    (ZLIB_CONDA_LOCK, "conda-lock", 6),
])
def test_real_lockfiles(path: Path, kind: str, count: int) -> None:
    assert kind_of(path) == kind
    lock = load_lockfile(path, "linux-64")
    assert len(lock.packages) == count
    if path.name == "test-env-pip-lock.yaml":
        assert [p.name for p in lock.pip] and all(p.url.startswith("https://") for p in lock.pip)
    assert all(p.url.endswith(p.file_name) and p.subdir in ("linux-64", "noarch") for p in lock.packages)


@needs_shared
def test_one_identity_across_formats(tmp_path: Path) -> None:
    from_conda_lock = load_lockfile(ZLIB_CONDA_LOCK, "linux-64")
    from_pixi = load_lockfile(ZLIB_PIXI, "linux-64")
    assert from_pixi.env_key == from_conda_lock.env_key
    for name, text in (("x.txt", explicit(from_conda_lock)), ("x-lock.yml", conda_lock(from_conda_lock))):
        (tmp_path / name).write_text(text)
        assert load_lockfile(tmp_path / name, "linux-64").env_key == from_conda_lock.env_key


@needs_shared
@pytest.mark.parametrize(("path", "needle"), [
    (SAMPLES / "micromamba" / "spec-files" / "explicit_env_osx.txt", "locked for osx-64, not linux-64"),
    (SAMPLES / "micromamba" / "lockfiles" / "bad_version-lock.yaml", "not a conda-lock version 1 file"),
    (LOCKS / "01bbae__ML__spec-file.txt", "locked for osx-arm64"),
])
def test_foreign_lockfiles_are_clear_errors(path: Path, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        load_lockfile(path, "linux-64")


def test_explicit_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "spec.txt"
    f.write_text("@EXPLICIT\nhttps://x.org/c/linux-64/a-1-0.conda#nothex\n")
    with pytest.raises(SpecError, match=r"spec.txt:2:\d+: 'nothex' is neither an md5 nor a sha256"):
        load_lockfile(f, "linux-64")


@needs_shared
def test_credentials_are_masked_everywhere() -> None:
    # The whole userinfo goes, user name included: it is often the token itself.
    assert mask("https://bob:hunter2@repo.example/t/tok-123/conda/linux-64/x.conda") == \
        "https://***@repo.example/t/***/conda/linux-64/x.conda"
    assert mask("see https://u:p@h/c and http://h2/t/abc/d") == "see https://***@h/c and http://h2/t/***/d"
    assert mask("https://ghp_TOKEN@host/c") == "https://***@host/c"
    assert mask("https://bob:p@ss@host/c") == "https://***@host/c"  # an unencoded "@" in the password
    lock = load_lockfile(ZLIB_CONDA_LOCK, "linux-64")
    from dataclasses import replace

    from provisiond.domain.lock import Lock

    secret = Lock(platform=lock.platform, packages=tuple(
        replace(p, url=p.url.replace("https://", "https://alice:s3cret@"),
                channel="https://alice:s3cret@conda.anaconda.org/t/tok-s3cret/c/")
        for p in lock.packages), channels=("https://ghp_s3cret@conda.anaconda.org/c/",))
    for text in (explicit(secret), conda_lock(secret), export(secret, name="x")):
        assert "s3cret" not in text and "alice" not in text and "://***@" in text
