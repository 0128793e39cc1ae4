"""pip.py: uv's pylock.toml → PipPackages, path rewriting, the uv target, and a real `uv pip compile` of git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisiond.domain.errors import SolveError
from provisiond.domain.lock import Lock, Package
from provisiond.domain.spec import parse_spec
from provisiond.engines.pip import (
    absolute_paths,
    conda_provided,
    find_uv,
    inputs_key,
    parse_pylock,
    python_target,
    resolve_pip,
)

HASH = {c: c * 64 for c in "abcdef"}
CN = "https://files.example.org/charset_normalizer-3.4.2"
PYLOCK = f"""
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "charset-normalizer"
version = "3.4.2"
sdist = {{ url = "{CN}.tar.gz", hashes = {{ sha256 = "{HASH['a']}" }} }}
wheels = [
  {{ url = "{CN}-py3-none-any.whl", hashes = {{ sha256 = "{HASH['b']}" }} }},
  {{ url = "{CN}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hashes = {{ sha256 = "{HASH['c']}" }} }},
  {{ url = "{CN}-cp311-cp311-manylinux_2_28_x86_64.whl", hashes = {{ sha256 = "{HASH['d']}" }} }},
]

[[packages]]
name = "only-sdist"
version = "0.1"
sdist = {{ url = "file:///srv/sdists/only_sdist-0.1.tar.gz", hashes = {{ sha256 = "{HASH['e']}" }} }}

[[packages]]
name = "gitlib"
version = "1.2.0"
vcs = {{ type = "git", url = "https://example.org/gitlib", requested-revision = "v1", commit-id = "{'12' * 20}" }}

[[packages]]
name = "proj"
directory = {{ path = ".", editable = true }}

[[packages]]
name = "vendored"
directory = {{ path = "vendor/lib" }}

[[packages]]
name = "local-wheel"
version = "2.0"
archive = {{ path = "dist/local_wheel-2.0-py3-none-any.whl", hashes = {{ sha256 = "{HASH['f']}" }} }}
"""


def conda(*names_versions: tuple[str, str], platform: str = "linux-64") -> Lock:
    return Lock(platform=platform, packages=tuple(
        Package(name=n, version=v, build="0", build_number=0, subdir=platform, channel="c", url=f"c/{n}-{v}-0.conda",
                file_name=f"{n}-{v}-0.conda", sha256="00" * 32) for n, v in names_versions))


def test_parse_pylock_pins_one_artifact_per_package(tmp_path: Path) -> None:
    pins = {p.name: p for p in parse_pylock(PYLOCK, tmp_path)}
    # The installer's choice: platform-specific over pure, then the newest manylinux level.
    assert pins["charset-normalizer"].url.endswith("cp311-cp311-manylinux_2_28_x86_64.whl")
    assert pins["charset-normalizer"].sha256 == HASH["d"]
    assert pins["only-sdist"].url.endswith(".tar.gz") and pins["only-sdist"].sha256 == HASH["e"]
    assert pins["gitlib"].url == f"git+https://example.org/gitlib@{'12' * 20}" and pins["gitlib"].sha256 is None
    assert pins["proj"].editable == str(tmp_path) and pins["proj"].url == tmp_path.as_uri()
    assert pins["proj"].version == "" and pins["proj"].requirement == f"-e {tmp_path.as_uri()}"
    assert pins["vendored"].editable is None and pins["vendored"].url == (tmp_path / "vendor" / "lib").as_uri()
    wheel = tmp_path / "dist" / "local_wheel-2.0-py3-none-any.whl"
    assert pins["local-wheel"].url == wheel.as_uri() and pins["local-wheel"].sha256 == HASH["f"]


@pytest.mark.parametrize(("line", "expected"), [
    ("-r requirements.txt", "-r {base}/requirements.txt"),
    ("--requirement=reqs/dev.txt", "--requirement {base}/reqs/dev.txt"),
    ("-rrequirements.txt", "-r {base}/requirements.txt"),
    ("-c ../constraints.txt", "-c {base}/../constraints.txt"),
    ("--find-links ./wheels", "--find-links {base}/wheels"),
    ("-f https://example.org/wheels/", "-f https://example.org/wheels/"),
    ("-r /etc/requirements.txt", "-r /etc/requirements.txt"),
    ("-e .", "-e ."),  # relative to the working directory, which is the yml's folder
    ("./pkg", "./pkg"),
    ("numpy>=1.26", "numpy>=1.26"),
    ("--index-url https://pypi.org/simple", "--index-url https://pypi.org/simple"),
])
def test_absolute_paths_only_for_paths_relative_to_the_requirements_file(line: str, expected: str) -> None:
    assert absolute_paths(line, Path("/proj")) == expected.format(base="/proj")
    assert absolute_paths(line, None) == line


@pytest.mark.parametrize(("glibc", "expected"), [
    ("2.36", "x86_64-manylinux_2_36"), ("2.30", "x86_64-manylinux_2_28"), ("2.12", "x86_64-manylinux_2_17"),
    ("2.45", "x86_64-manylinux_2_40"), (None, "x86_64-manylinux_2_17"),
])
def test_python_target_from_the_conda_python_and_glibc(glibc: str | None, expected: str) -> None:
    virtual = [f"__glibc={glibc}=0"] if glibc else []
    assert python_target(conda(("python", "3.11.7"), ("zlib", "1.3")), [*virtual, "__unix=0=0"]) == ("3.11.7", expected)
    osx = conda(("python", "3.12.1"), platform="osx-arm64")
    assert python_target(osx) == ("3.12.1", "aarch64-apple-darwin")


def test_python_target_without_python_is_a_solve_error() -> None:
    with pytest.raises(SolveError, match=r"environment\.yml: the pip: section needs a Python") as info:
        python_target(conda(("zlib", "1.3")), source="environment.yml")
    assert "python" in (info.value.hint or "")


def test_conda_provided_names_the_python_distributions_of_the_conda_packages() -> None:
    def pkg(name: str, version: str, depends: tuple[str, ...] = (), noarch: str | None = None) -> Package:
        return Package(name=name, version=version, build="0", build_number=0, subdir="linux-64", channel="c",
                       url=f"c/{name}.conda", file_name=f"{name}.conda", depends=depends, noarch=noarch)

    lock = Lock(platform="linux-64", packages=(
        pkg("python", "3.11.7", ("libzlib >=1.2",)),
        pkg("numpy", "1.26.4", ("python >=3.11,<3.12.0a0", "python_abi 3.11.* *_cp311")),
        pkg("typing_extensions", "4.12.2", noarch="python"),
        pkg("zlib", "1.3.1", ("libzlib 1.3.1 hb9d3cd8_2",)),
        pkg("openssl-py", "3.0.1w", ("python",)),  # not a PEP 440 version: left to uv
    ))
    assert conda_provided(lock) == {"numpy": "1.26.4", "typing-extensions": "4.12.2"}


def test_inputs_key_follows_included_files(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-c constraints.txt\nnumpy\n")
    (tmp_path / "constraints.txt").write_text("numpy<2\n")
    spec = parse_spec("dependencies:\n  - python\n  - pip:\n    - -r requirements.txt\n", project_dir=str(tmp_path))
    first = inputs_key(spec, "k")
    assert first != "k" and inputs_key(spec, "k") == first
    (tmp_path / "constraints.txt").write_text("numpy<3\n")  # a nested include counts too
    assert inputs_key(spec, "k") != first
    plain = parse_spec("dependencies:\n  - python\n  - pip:\n    - numpy\n", project_dir=str(tmp_path))
    assert inputs_key(plain, "k") == "k"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
async def test_resolve_pins_a_git_requirement_to_its_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src" / "gitlib").mkdir(parents=True)
    (repo / "src" / "gitlib" / "__init__.py").write_text("")
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "gitlib"\nversion = "1.2.0"\n'
        '[build-system]\nrequires = ["uv_build>=0.7,<1"]\nbuild-backend = "uv_build"\n')
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    spec = parse_spec(f"dependencies:\n  - python\n  - pip:\n    - --no-index\n    - gitlib @ git+{repo.as_uri()}@v1\n",
                      project_dir=str(tmp_path))
    lines: list[str] = []
    lock = await resolve_pip(spec, conda(("python", "3.11.7")), uv=find_uv(), cache_dir=tmp_path / "cache",
                             on_line=lines.append)
    [pin] = lock.pip
    assert (pin.name, pin.version, pin.url) == ("gitlib", "1.2.0", f"git+{repo.as_uri()}@{commit}")
    assert lock.pip_options == ("--no-index",) and lock.packages == conda(("python", "3.11.7")).packages
    assert any("Resolved 1 package" in line for line in lines)
