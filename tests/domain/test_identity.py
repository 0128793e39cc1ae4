"""One identity (issue 12.3, 12.5): the same artifacts give one env_key from every lockfile format, whatever
hash fields or URL spelling a file uses; @EXPLICIT duplicates, conflicts and subdirs; pixi environments."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.domain.errors import PlatformError, SpecError
from provisiond.domain.lockfiles import kind_of, load_lockfile

CF = "https://conda.anaconda.org/conda-forge"
# (subdir, file name, md5, sha256): a small real-looking set
PACKAGES = [
    ("linux-64", "_libgcc_mutex-0.1-conda_forge.tar.bz2", "d7c89558ba9fa0495403155b64376d81",
     "fe51de6107f9edc7aa4f786a70f4a883943bc9d39b3bb7307c04c41410990726"),
    ("linux-64", "libzlib-1.3.1-hb9d3cd8_2.conda", "41b599ed2b02abcfdd84302bff174b23",
     "d4bfe88d7cb447768e31650f06257995601f89076080e76df55e3112d4e47dc4"),
    ("noarch", "tzdata-2024b-hc8b5060_0.conda", "8ac3367aafb1cc0a068483c580af8015",
     "4fde5c3008bf5d2db82f2b50204464314cc3c91c1d953652f7bd01d9e52aefdf"),
]


def explicit_md5(url_of: object = None) -> str:
    lines = ["# platform: linux-64", "@EXPLICIT"]
    lines += [f"{CF}/{s}/{f}#{md5}" for s, f, md5, _sha in PACKAGES]
    return "\n".join(lines) + "\n"


def conda_lock_sha256() -> str:
    out = ["version: 1", "metadata:", "  platforms: [linux-64]", "  channels: [{url: conda-forge}]", "package:"]
    for s, f, _md5, sha in PACKAGES:
        name, version, _build = f.removesuffix(".conda").removesuffix(".tar.bz2").rsplit("-", 2)
        out += [f"- name: {name}", f"  version: '{version}'", "  manager: conda", "  platform: linux-64",
                "  dependencies: {}", f"  url: {CF}/{s}/{f}", f"  hash: {{sha256: {sha}}}",
                "  category: main", "  optional: false"]
    return "\n".join(out) + "\n"


def pixi_lock(extra_env: bool = False, pypi: str = "") -> str:
    urls = [f"{CF}/{s}/{f}" for s, f, _m, _s in PACKAGES]
    out = ["version: 6", "environments:", "  default:", "    channels:", f"      - url: {CF}/",
           "    packages:", "      linux-64:", *(f"        - conda: {u}" for u in urls)]
    if pypi:
        out.append(f"        - pypi: {pypi}")
    if extra_env:
        out += ["  small:", "    channels:", f"      - url: {CF}/", "    packages:", "      linux-64:",
                f"        - conda: {urls[0]}"]
    out.append("packages:")
    for (_s, _f, md5, sha), url in zip(PACKAGES, urls, strict=True):
        out += [f"  - conda: {url}", f"    sha256: {sha}", f"    md5: {md5}", "    size: 100"]
    if pypi:
        out += [f"  - pypi: {pypi}", "    name: mypkg", "    version: 0.1.0", "    editable: true"]
    return "\n".join(out) + "\n"


def test_md5_explicit_sha256_conda_lock_and_pixi_give_one_env_key(tmp_path: Path) -> None:
    files = {"spec.txt": explicit_md5(), "conda-lock.yml": conda_lock_sha256(), "pixi.lock": pixi_lock()}
    keys = {}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        lock = load_lockfile(tmp_path / name, "linux-64")
        assert len(lock.packages) == 3, name
        keys[name] = lock.env_key
    assert len(set(keys.values())) == 1, keys
    assert {kind_of(tmp_path / n) for n in files} == {"explicit", "conda-lock", "pixi"}


def test_url_spelling_and_sha256_fragments_keep_the_key(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(explicit_md5())
    respelled = explicit_md5().replace("https://conda.anaconda.org/", "HTTP://user:tok@Conda.Anaconda.org//t/x/")
    for _s, f, md5, sha in PACKAGES:
        respelled = respelled.replace(f"{f}#{md5}", f"{f.replace('.', '%2E', 1)}#sha256:{sha}")
    (tmp_path / "b.txt").write_text(respelled)
    assert load_lockfile(tmp_path / "a.txt", "linux-64").env_key == load_lockfile(tmp_path / "b.txt", "linux-64").env_key


def test_explicit_duplicate_line_counts_once_and_two_versions_are_an_error(tmp_path: Path) -> None:
    text = explicit_md5()
    first = text.splitlines()[2]
    (tmp_path / "dup.txt").write_text(text + first.replace("https://", "http://") + "\n")
    assert len(load_lockfile(tmp_path / "dup.txt", "linux-64").packages) == 3
    other = f"{CF}/linux-64/libzlib-1.3.0-hb9d3cd8_1.conda"
    (tmp_path / "two.txt").write_text(text + other + "\n")
    with pytest.raises(SpecError, match=r"two.txt:6:1: two versions of libzlib: libzlib-1.3.1-hb9d3cd8_2 \(line 4\) "
                                        r"and libzlib-1.3.0-hb9d3cd8_1 \(line 6\)"):
        load_lockfile(tmp_path / "two.txt", "linux-64")


def test_explicit_subdirs_are_checked_against_the_platform(tmp_path: Path) -> None:
    text = explicit_md5().replace("# platform: linux-64\n", "") + f"{CF}/osx-64/foo-1-0.conda\n"
    (tmp_path / "mixed.txt").write_text(text)
    with pytest.raises(PlatformError, match=r"mixed.txt:5:1: foo-1-0.conda is a osx-64 package, not linux-64"):
        load_lockfile(tmp_path / "mixed.txt", "linux-64")
    with pytest.raises(PlatformError, match="locked for linux-64, not osx-arm64"):
        (tmp_path / "spec.txt").write_text(explicit_md5())
        load_lockfile(tmp_path / "spec.txt", "osx-arm64")


def test_format_detection_reads_the_whole_file(tmp_path: Path) -> None:
    header = "".join(f"# comment line {i} {'x' * 80}\n" for i in range(200))  # ~18 KiB before the tag
    (tmp_path / "long.txt").write_text(header + explicit_md5())
    assert kind_of(tmp_path / "long.txt") == "explicit"
    body = conda_lock_sha256()
    packages = body[body.index("package:"):]
    # conda-lock with a long package list before its metadata, under a neutral name
    (tmp_path / "lock.yaml").write_text("version: 1\n" + packages + "x: '" + "y" * 9000 + "'\n"
                                        "metadata:\n  platforms: [linux-64]\n")
    assert kind_of(tmp_path / "lock.yaml") == "conda-lock"
    assert len(load_lockfile(tmp_path / "lock.yaml", "linux-64").packages) == 3


def test_pixi_environment_is_chosen(tmp_path: Path) -> None:
    (tmp_path / "pixi.lock").write_text(pixi_lock(extra_env=True))
    assert len(load_lockfile(tmp_path / "pixi.lock", "linux-64").packages) == 3
    small = load_lockfile(tmp_path / "pixi.lock", "linux-64", "small")
    assert [p.name for p in small.packages] == ["_libgcc_mutex"] and small.meta == {"environment": "small"}
    with pytest.raises(SpecError, match=r"no environment 'gpu' \(it has: default, small\)"):
        load_lockfile(tmp_path / "pixi.lock", "linux-64", "gpu")
    with pytest.raises(PlatformError, match="environment 'default' is locked for linux-64, not osx-arm64"):
        load_lockfile(tmp_path / "pixi.lock", "osx-arm64")
    (tmp_path / "spec.txt").write_text(explicit_md5())
    with pytest.raises(SpecError, match=r"--environment is for pixi\.lock files"):
        load_lockfile(tmp_path / "spec.txt", "linux-64", "small")


def test_pixi_local_project_is_an_editable_install_of_its_path(tmp_path: Path) -> None:
    (tmp_path / "pixi.lock").write_text(pixi_lock(pypi="./mypkg"))
    with pytest.raises(SpecError, match=r"PyPI package mypkg is the local project '\./mypkg'.*does not exist"):
        load_lockfile(tmp_path / "pixi.lock", "linux-64")
    (tmp_path / "mypkg").mkdir()
    lock = load_lockfile(tmp_path / "pixi.lock", "linux-64")
    (pin,) = lock.pip
    assert pin.editable == str(tmp_path / "mypkg") and pin.requirement == f"-e {(tmp_path / 'mypkg').as_uri()}"
    (tmp_path / "pixi.lock").write_text(pixi_lock())
    assert load_lockfile(tmp_path / "pixi.lock", "linux-64").env_key != lock.env_key  # the pip pin counts
