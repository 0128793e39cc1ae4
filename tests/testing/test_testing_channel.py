"""provisiond.testing.channel builds real packages that rattler indexes, solves and installs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import rattler

from provisiond.testing.channel import (
    PLACEHOLDER,
    Pkg,
    build_channel,
    build_package,
    demo_packages,
    generated_packages,
    hello_pkg,
    write_repodata_only_channel,
)

PLATFORM = str(rattler.Subdir.current())


def solve(channel: Path, specs: list[str], virtual: bool = True) -> list[rattler.RepoDataRecord]:
    """Solve ``specs`` against the local channel for the current platform + noarch."""
    return asyncio.run(
        rattler.solve(
            [rattler.Channel(channel.as_uri())],
            specs,
            platforms=[PLATFORM, "noarch"],
            virtual_packages=rattler.VirtualPackage.detect() if virtual else [],
        )
    )


def install(records: list[rattler.RepoDataRecord], prefix: Path, cache: Path) -> None:
    """Install ``records`` into ``prefix`` with a private package cache."""
    asyncio.run(rattler.install(records, prefix, cache_dir=cache, show_progress=False))


def versions(records: list[rattler.RepoDataRecord]) -> dict[str, str]:
    return {r.name.normalized: str(r.version) for r in records}


@pytest.fixture(scope="session")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_channel(tmp_path_factory.mktemp("channel"), demo_packages())


@pytest.fixture(scope="session")
def pkg_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pkgs")


@pytest.fixture(scope="session")
def hello2_prefix(channel: Path, pkg_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("envs") / "hello2"
    install(solve(channel, ["hello"]), prefix, pkg_cache)
    return prefix


def test_channel_layout_and_repodata(channel: Path) -> None:
    noarch = json.loads((channel / "noarch" / "repodata.json").read_text())
    native = json.loads((channel / PLATFORM / "repodata.json").read_text())
    assert set(noarch["packages.conda"]) == {"greet-data-1.0-0.conda"}
    assert set(native["packages"]) == {"hello-2.0-0.tar.bz2"}
    assert set(native["packages.conda"]) == {"hello-1.0-0.conda", "libgreet-1.0-0.conda", "tool-a-1.0-0.conda"}
    rec = native["packages"]["hello-2.0-0.tar.bz2"]
    assert rec["depends"] == ["libgreet >=1.0"]
    assert rec["subdir"] == PLATFORM and rec["timestamp"] > 0
    archive = channel / PLATFORM / "hello-2.0-0.tar.bz2"
    assert rec["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert noarch["packages.conda"]["greet-data-1.0-0.conda"]["noarch"] == "generic"


def test_conda_archive_structure(channel: Path) -> None:
    with zipfile.ZipFile(channel / PLATFORM / "hello-1.0-0.conda") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        assert set(zf.namelist()) == {"metadata.json", "info-hello-1.0-0.tar.zst", "pkg-hello-1.0-0.tar.zst"}
        assert json.loads(zf.read("metadata.json")) == {"conda_pkg_format_version": 2}


def test_builds_are_deterministic(tmp_path: Path) -> None:
    for fmt in (".conda", ".tar.bz2"):
        pkg = hello_pkg("det", format=fmt)
        a = build_package(pkg, tmp_path / "a", PLATFORM).read_bytes()
        b = build_package(pkg, tmp_path / "b", PLATFORM).read_bytes()
        assert a == b, fmt
    assert generated_packages(3, 5) == generated_packages(3, 5)


def test_pkg_validation() -> None:
    with pytest.raises(ValueError, match="executables"):
        Pkg("x", executables=("bin/missing",))
    with pytest.raises(ValueError, match="more than one"):
        Pkg("x", files={"a": "1"}, text_prefix={"a": PLACEHOLDER})
    with pytest.raises(ValueError, match="PLACEHOLDER"):
        Pkg("x", binary_prefix={"lib/x.bin": b"no placeholder"})
    with pytest.raises(ValueError, match="noarch"):
        build_package(Pkg("x", noarch=True), Path("/nonexistent"), PLATFORM)


def test_solve_picks_latest_hello_and_its_dependency(channel: Path) -> None:
    assert versions(solve(channel, ["hello"])) == {"hello": "2.0", "libgreet": "1.0"}


def test_tar_bz2_install_replaces_prefixes(hello2_prefix: Path) -> None:
    prefix = str(hello2_prefix)
    env_json = hello2_prefix / "etc/conda/env_vars.d/hello.json"
    assert json.loads(env_json.read_text()) == {"HELLO_HOME": f"{prefix}/share/hello"}

    script = hello2_prefix / "bin/hello"
    assert PLACEHOLDER not in script.read_text() and prefix in script.read_text()
    assert os.access(script, os.X_OK)
    out = subprocess.run([script], capture_output=True, text=True, check=True).stdout
    assert out == f"Hello 2.0 from {prefix}\n"

    original = hello_pkg("hello", "2.0").binary_prefix["lib/hello.bin"]
    installed = (hello2_prefix / "lib/hello.bin").read_bytes()
    assert len(installed) == len(original)
    assert PLACEHOLDER.encode() not in installed
    # The C string "<placeholder>/lib\0" becomes "<prefix>/lib\0" padded with NULs to the same length.
    start = original.index(PLACEHOLDER.encode())
    end = original.index(b"\0", start)
    new_string = f"{prefix}/lib".encode()
    assert installed[start:end] == new_string + b"\0" * (end - start - len(new_string))
    assert installed[:start] == original[:start] and installed[end:] == original[end:]

    assert (hello2_prefix / "etc/conda/activate.d/hello.sh").read_text() == "export HELLO_ACTIVATED=1\n"
    assert (hello2_prefix / "etc/conda/deactivate.d/hello.sh").read_text() == "unset HELLO_ACTIVATED\n"
    assert (hello2_prefix / "lib/libgreet.so").exists()
    metas = {p.name for p in (hello2_prefix / "conda-meta").glob("*.json")}
    assert {"hello-2.0-0.json", "libgreet-1.0-0.json"} <= metas


def test_conda_format_and_noarch_install(channel: Path, pkg_cache: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    records = solve(channel, ["hello ==1.0", "greet-data", "tool-a"])
    assert versions(records) == {"hello": "1.0", "libgreet": "1.0", "greet-data": "1.0", "tool-a": "1.0"}
    install(records, prefix, pkg_cache)

    out = subprocess.run([prefix / "bin/hello"], capture_output=True, text=True, check=True).stdout
    assert out == f"Hello 1.0 from {prefix}\n"
    out = subprocess.run([prefix / "bin/tool-a"], capture_output=True, text=True, check=True).stdout
    assert out == f"tool-a says hi from {prefix}\n"
    data = next(p for p in demo_packages() if p.name == "greet-data")
    blob = prefix / "share/greet-data/blob.bin"
    assert blob.read_bytes() == data.files["share/greet-data/blob.bin"]
    assert blob.stat().st_size > 2 * 1024 * 1024


def test_build_channel_again_adds_packages(tmp_path: Path) -> None:
    root = build_channel(tmp_path / "ch", [hello_pkg("first")])
    assert not json.loads((root / "noarch" / "repodata.json").read_text())["packages.conda"]
    build_channel(root, [hello_pkg("second", format=".tar.bz2")])
    assert versions(solve(root, ["first", "second"])) == {"first": "1.0", "second": "1.0"}


@pytest.mark.asyncio
async def test_build_channel_inside_running_event_loop(tmp_path: Path) -> None:
    root = build_channel(tmp_path / "ch", [Pkg("plain", files={"share/plain.txt": "hi\n"}, noarch=True)])
    records = await rattler.solve(
        [rattler.Channel(root.as_uri())], ["plain"], platforms=[PLATFORM, "noarch"], virtual_packages=[]
    )
    assert versions(records) == {"plain": "1.0"}


def test_generated_packages_install(tmp_path: Path) -> None:
    pkgs = generated_packages(n=6, files_per_pkg=8)
    assert all(len(p.files) + len(p.text_prefix) + len(p.binary_prefix) == 8 for p in pkgs)
    root = build_channel(tmp_path / "ch", pkgs)
    records = solve(root, ["gen-0004"], virtual=False)
    assert set(versions(records)) == {f"gen-{i:04d}" for i in range(5)}  # a chain of 5
    install(records, tmp_path / "env", tmp_path / "pkgs")
    out = subprocess.run([tmp_path / "env/bin/gen-0004"], capture_output=True, text=True, check=True).stdout
    assert out == f"gen-0004 from {tmp_path / 'env'}\n"


def test_repodata_only_channel_solves(tmp_path: Path) -> None:
    root = write_repodata_only_channel(tmp_path / "rd", n_records=2000)
    repodata = json.loads((root / PLATFORM / "repodata.json").read_text())
    records = {**repodata["packages"], **repodata["packages.conda"]}
    assert len(records) >= 2000
    assert all({"sha256", "md5", "size", "timestamp", "depends"} <= set(r) for r in records.values())
    names = sorted({r["name"] for r in records.values()})
    solved = solve(root, names[-10:], virtual=False)
    assert set(names[-10:]) <= set(versions(solved))
    assert len(solved) > 10  # the top names pull in dependency trees
