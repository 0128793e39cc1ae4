"""conda-lock v1 for several platforms (domain/projectlock.py): what we write, read back, and the input hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import rattler

from provisiond.domain.errors import SpecError
from provisiond.domain.lock import Lock
from provisiond.domain.lockfiles import package_from_url
from provisiond.domain.projectlock import LockPlatformError, input_hash, parse, render
from provisiond.domain.spec import parse_spec
from tests.conftest import SHARED, needs_shared

BASE = "https://conda.anaconda.org/conda-forge"
SPEC = "channels: [conda-forge]\ndependencies:\n  - zlib\n  - python >=3.11\n"


def lock_for(platform: str) -> Lock:
    packages = (package_from_url(f"{BASE}/{platform}/zlib-1.3.1-h0_2.conda", sha256="a" * 64, md5="b" * 32,
                                 depends=("libzlib 1.3.1 h0_2", "__glibc >=2.17")),
                package_from_url(f"{BASE}/noarch/tzdata-2024a-h0_0.conda", sha256="c" * 64, md5="d" * 32))
    return Lock(platform=platform, packages=packages, channels=(f"{BASE}/",), meta={"channel_priority": "strict"})


def test_render_then_parse_round_trips_every_platform(tmp_path: Path) -> None:
    locks = {p: lock_for(p) for p in ("osx-arm64", "linux-64")}
    spec = parse_spec(SPEC)
    hashes = {p: input_hash(spec, p) for p in locks}
    text = render(locks, hashes, sources=["environment.yml"], channels=[f"{BASE}/"], channel_priority="strict")
    assert text == render(locks, hashes, sources=["environment.yml"], channels=[f"{BASE}/"], channel_priority="strict")
    back = parse(text, "conda-lock.yml")
    assert back.platforms == ("linux-64", "osx-arm64")  # sorted in the file
    assert all(back.locks[p].env_key == locks[p].env_key for p in locks)  # the same env, read back
    assert back.current("linux-64", spec) and back.channel_priority == "strict" and back.generator == "provisiond"
    assert back.locks["linux-64"].meta == {"channel_priority": "strict"}
    assert "__glibc >=2.17" in next(p for p in back.locks["linux-64"].packages if p.name == "zlib").depends
    path = tmp_path / "conda-lock.yml"
    path.write_text(text)  # rattler's reader, conda-lock's format as conda's plugin and pixi read it
    env = rattler.LockFile.from_path(path).default_environment()
    assert env is not None and {p.name for p in env.platforms()} == {"linux-64", "osx-arm64"}
    with pytest.raises(LockPlatformError, match=r"locked for linux-64, osx-arm64, not for this machine \(win-64\)"):
        back.lock_for("win-64", "conda-lock.yml")


def test_input_hash_ignores_what_does_not_change_the_answer() -> None:
    spec = parse_spec(SPEC)
    same = parse_spec("# a comment\nname: other\nchannels: [conda-forge]\nvariables: {A: b}\n"
                      "dependencies:\n  - python >=3.11\n  - zlib\n")
    assert input_hash(spec, "linux-64") == input_hash(same, "linux-64") != input_hash(spec, "osx-arm64")
    for changed in (SPEC.replace("zlib", "zlib 1.2.*"), SPEC.replace("conda-forge", "bioconda"),
                    SPEC + "channel_priority: flexible\n", SPEC + "  - pip:\n    - rich\n"):
        assert input_hash(parse_spec(changed), "linux-64") != input_hash(spec, "linux-64"), changed


@needs_shared
def test_a_lock_written_by_conda_lock_is_read_for_every_platform() -> None:
    sample = SHARED / "contract" / "samples" / "conda-lock" / "example-zlib-conda-lock.yml"
    read = parse(sample.read_text(), str(sample))
    assert read.platforms == ("linux-64", "osx-64", "win-64") and read.channels == ("conda-forge", "defaults")
    assert read.channel_priority is None and read.generator == ""
    assert {p.name for p in read.locks["linux-64"].packages} >= {"zlib", "libzlib"}
    assert not read.current("linux-64", parse_spec("channels: [conda-forge]\ndependencies: [zlib]\n"))


def test_not_a_conda_lock_file_is_a_clear_error() -> None:
    for text in ("version: 2\npackage: []\n", "[unclosed\n", "version: 1\nmetadata: {}\npackage: []\n"):
        with pytest.raises(SpecError, match=r"conda-lock\.yml"):
            parse(text, "conda-lock.yml")
