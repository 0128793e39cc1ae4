"""pip sections: pinned by ``uv pip compile`` into the Lock, installed by ``uv pip install`` into the env.

Resolution happens with the conda solve (the pins are part of the cached Lock and of env_key);
installation happens after the conda packages and before publish, at the env's final path,
because uv writes the interpreter's absolute path into entry-point scripts. The pip lines are
kept verbatim (requirements-file syntax, contract §1.6), except that the paths of ``-r``, ``-c``
and ``--find-links`` are made absolute: in a requirements file they are relative to that file,
and ours lives in a temporary directory, not in the yml's folder. ``-e .`` and other plain paths
are relative to the working directory, which is the yml's folder, as with conda and micromamba.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from provisiond.domain.errors import EngineError, SolveError
from provisiond.domain.lock import Lock, PipPackage
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import mask
from provisiond.engines._process import ProcessResult, run_process
from provisiond.engines.base import OnLine
from provisiond.store.files import read_regular

__all__ = ["conda_provided", "find_uv", "inputs_key", "install_pip", "parse_pylock", "python_target", "resolve_pip",
           "resolver_settings"]

MAX_REQUIREMENTS = 1 << 20  # bytes of a -r/-c file we read: more is not a requirements file
COMPILE_TIMEOUT = 600.0  # seconds; building the metadata of a git or sdist requirement can be slow
INSTALL_TIMEOUT = 1800.0
_PATH_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-f", "--find-links")
_INCLUDES = ("-r", "--requirement", "-c", "--constraint")
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links")
# Variables that would point uv at another interpreter, environment or config than ours.
_SCRUBBED = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "PYTHONPATH", "UV_PYTHON", "UV_SYSTEM_PYTHON",
             "UV_PROJECT_ENVIRONMENT", "UV_CONFIG_FILE")
# The manylinux_2_X levels uv accepts in --python-platform (`uv pip compile --help`).
_GLIBC_LEVELS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
_UV_PLATFORMS = {"osx-64": "x86_64-apple-darwin", "osx-arm64": "aarch64-apple-darwin",
                 "win-64": "x86_64-pc-windows-msvc", "win-arm64": "aarch64-pc-windows-msvc"}
_LINUX_ARCHES = {"linux-64": "x86_64", "linux-aarch64": "aarch64"}
_UNSOLVABLE = ("No solution found", "not found in the package registry", "not found in the provided package")
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_|manylinux(2014|2010|1)_")
_LEGACY_MANYLINUX = {"2014": (2, 17), "2010": (2, 12), "1": (2, 5)}
# The plain PEP 440 versions a conda version can be passed to uv as (others are skipped).
_PEP440 = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?")


@functools.cache
def find_uv() -> str:
    """The uv executable that ships with provisiond (the PyPI package ``uv``)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise EngineError("uv was not found, and pip: sections are installed with it",
                          hint="install the 'uv' package into provisiond's environment") from None


@functools.cache
def _uv_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"uv {version('uv')}"
    except PackageNotFoundError:
        return "uv unknown"


def resolver_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """What besides the pip lines changes the answer of ``uv pip compile`` (part of spec_key):
    uv's version and the ``UV_*`` variables it reads (index URLs, resolution, prerelease, ...).
    Config files cannot: uv runs with ``--no-config``."""
    environ = os.environ if environ is None else environ
    variables = sorted(f"{k}={v}" for k, v in environ.items() if k.startswith("UV_") and k not in _SCRUBBED)
    return [_uv_version(), *variables]


def inputs_key(spec: EnvSpec, key: str) -> str:
    """``key`` extended with the contents of the files the pip section includes (``-r``, ``-c``).

    spec_key hashes the yml only, so without this an edited requirements.txt would keep
    resolving to the cached lock.
    """
    files = sorted(included_files(spec))
    if not files:
        return key
    digest = hashlib.sha256(key.encode())
    for path in files:
        data = read_regular(path, MAX_REQUIREMENTS)
        content = hashlib.sha256(data).hexdigest() if data is not None else "missing or not a regular file"
        digest.update(f"\0{path}\0{content}".encode())
    return digest.hexdigest()


def conda_provided(lock: Lock) -> dict[str, str]:
    """Python distributions the conda packages install: normalised name → version.

    pip inside a conda env leaves a requirement alone when a conda package already satisfies it;
    uv resolves before the env exists, so these become constraints and are not installed again.
    A conda package counts when it is ``noarch: python`` or depends on ``python``/``python_abi``;
    its name is taken as the PyPI name (true for most, not all: ``pytorch`` is ``torch``).
    """
    provided = {}
    for p in lock.packages:
        python_dep = any(re.split(r"[\s=<>!]", d, maxsplit=1)[0] in ("python", "python_abi") for d in p.depends)
        if p.name != "python" and (p.noarch == "python" or python_dep) and _PEP440.fullmatch(p.version):
            provided[_normalise(p.name)] = p.version
    return provided


def python_target(lock: Lock, virtual_packages: Sequence[str] = (), source: str = "spec") -> tuple[str, str | None]:
    """The ``--python-version`` and ``--python-platform`` for uv, from the conda lock and the host's glibc."""
    python = next((p for p in lock.packages if p.name == "python"), None)
    if python is None:
        raise SolveError(f"{source}: the pip: section needs a Python, and the conda packages have none",
                         hint="add '- python' to the dependencies, next to '- pip:'")
    version = re.match(r"\d+(\.\d+){0,2}", python.version)
    if version is None:
        raise SolveError(f"cannot read the Python version {python.version!r} of the conda package python")
    platform = _UV_PLATFORMS.get(lock.platform)
    if lock.platform in _LINUX_ARCHES:
        glibc = _glibc(virtual_packages)
        level = max((lvl for lvl in _GLIBC_LEVELS if lvl <= glibc[1]), default=17) if glibc[0] == 2 else 17
        platform = f"{_LINUX_ARCHES[lock.platform]}-manylinux_2_{level}"
    return version.group(0), platform


async def resolve_pip(spec: EnvSpec, lock: Lock, *, uv: str, cache_dir: Path, on_line: OnLine,
                      virtual_packages: Sequence[str] = (), refresh: bool = False) -> Lock:
    """``lock`` with the spec's pip section pinned by ``uv pip compile`` (unchanged if it has none)."""
    if not spec.pip:
        return lock
    source = spec.source or "spec"
    version, platform = python_target(lock, virtual_packages, source)
    cwd = Path(spec.project_dir) if spec.project_dir else None
    lines = [absolute_paths(line, cwd) for line in spec.pip]
    provided = conda_provided(lock)
    with tempfile.TemporaryDirectory(prefix="provisiond-pip-") as work:
        requirements = Path(work) / "requirements.in"
        requirements.write_text("\n".join(lines) + "\n")
        constraints = Path(work) / "conda-packages.txt"
        constraints.write_text("".join(f"{name}=={v}\n" for name, v in sorted(provided.items())))
        argv = [uv, "pip", "compile", str(requirements), "--constraints", str(constraints),
                "--format", "pylock.toml", "--no-header", "--python", sys.executable, "--python-version", version,
                *(["--python-platform", platform] if platform else []), *_common(cache_dir)]
        if refresh:
            argv.append("--refresh")
        on_line(f"resolving {len(lines)} pip lines for Python {version} ({platform or 'this platform'})")
        result = await run_process(argv, on_line=on_line, timeout=COMPILE_TIMEOUT, env=_environ(),
                                   cwd=cwd or Path(work), step="uv pip compile", capture_stdout=True)
        if result.returncode != 0:
            raise _compile_error(source, result)
        pinned = parse_pylock(result.stdout, cwd or Path(work))
    # What conda installed stays; a local or VCS source the section names explicitly replaces it.
    pinned = tuple(p for p in pinned if _normalise(p.name) not in provided or not p.sha256)
    options = tuple(line for line in lines if _option(line) in _INDEX_OPTIONS)
    return replace(lock, pip=pinned, pip_options=options)


async def install_pip(lock: Lock, prefix: Path, *, uv: str, cache_dir: Path, on_line: OnLine) -> None:
    """Install the lock's pip packages into ``prefix`` (its final path): exactly those, no resolution."""
    if not lock.pip:
        return
    python = prefix / ("python.exe" if lock.platform.startswith("win") else "bin/python")
    if not python.exists():
        raise EngineError(f"the env has no Python at {python} to install the pip packages into",
                          hint="the conda 'python' package provides it; check the dependencies")
    with tempfile.TemporaryDirectory(prefix="provisiond-pip-") as work:
        requirements = Path(work) / "requirements.txt"
        requirements.write_text("\n".join([*lock.pip_options, *(p.requirement for p in lock.pip)]) + "\n")
        # --no-deps: the lock is complete; the hashes make uv refuse any other artifact.
        argv = [uv, "pip", "install", "--python", str(python), "--no-deps", "-r", str(requirements),
                *_common(cache_dir)]
        # A local project keyed by content: uv's cache keys a directory's build by its pyproject.toml's
        # mtime, so an edited module would come back from the cache. Build it again.
        for pin in lock.pip:
            if pin.content and not pin.editable:
                argv += ["--refresh-package", pin.name]
        on_line(f"installing {len(lock.pip)} pip packages with uv")
        result = await run_process(argv, on_line=on_line, timeout=INSTALL_TIMEOUT, env=_environ(),
                                   cwd=Path(work), step="uv pip install")
    if result.returncode != 0:
        raise EngineError(f"uv pip install into {prefix} failed ({result.describe_exit()}):\n"
                          + _tail(result.output_tail))


def parse_pylock(text: str, base: Path) -> tuple[PipPackage, ...]:
    """Our PipPackages from uv's ``pylock.toml`` (PEP 751); relative paths are relative to ``base``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EngineError(f"uv pip compile printed no readable pylock.toml: {exc}") from None
    return tuple(_pinned(entry, base) for entry in doc.get("packages", ()))


def absolute_paths(line: str, base: Path | None) -> str:
    """A pip line with the relative path of ``-r``/``-c``/``--find-links`` made absolute against ``base``."""
    option = _option(line)
    if base is None or option not in _PATH_OPTIONS:
        return line
    value = line[len(option):].lstrip(" =")
    if not value or "://" in value or value.startswith(("/", "~", "$")):
        return line
    return f"{option} {base / value}"


# -- details ----------------------------------------------------------------------------------


def _common(cache_dir: Path) -> list[str]:
    # --no-config: the yml is the whole request; a stray uv.toml must not change what resolves.
    return ["--cache-dir", str(cache_dir), "--no-config", "--no-python-downloads", "--color", "never"]


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["GIT_TERMINAL_PROMPT"] = "0"  # a private git URL must fail, not wait for a password
    return env


def _option(line: str) -> str:
    """The option a pip line starts with (``-r``, ``--index-url``), or "" for a requirement."""
    head = line.split(maxsplit=1)[0] if line.strip() else ""
    if head.startswith("--"):
        return head.split("=", 1)[0]
    if head.startswith("-") and len(head) >= 2:
        return head[:2]  # `-rfile` is `-r file`
    return ""


def included_files(spec: EnvSpec) -> Iterable[Path]:
    """The -r/-c files of a pip section, and the files they include in turn."""
    base = Path(spec.project_dir) if spec.project_dir else None
    pending = [(absolute_paths(line, base), base) for line in spec.pip]
    seen: set[Path] = set()
    while pending:
        line, here = pending.pop()
        if _option(line) not in _INCLUDES:
            continue
        path = Path(line[len(_option(line)):].lstrip(" ="))
        path = path if path.is_absolute() or here is None else here / path
        if path in seen or len(seen) > 100:
            continue
        seen.add(path)
        data = read_regular(path, MAX_REQUIREMENTS)  # a FIFO or /dev/zero from a clone: never read
        if data is None:
            continue
        nested = data.decode(errors="replace").splitlines()
        pending += [(n.strip(), path.parent) for n in nested if n.strip().startswith("-")]
    return seen


def _normalise(name: str) -> str:
    """PEP 503 name: ``Foo_Bar`` and ``foo.bar`` are ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _glibc(virtual_packages: Sequence[str]) -> tuple[int, int]:
    for vp in virtual_packages:
        name, _, rest = vp.partition("=")
        if name == "__glibc":
            parts = rest.split("=")[0].split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return int(parts[0]), int(parts[1])
    return (0, 0)


def _compile_error(source: str, result: ProcessResult) -> Exception:
    tail = _tail(result.output_tail)
    if any(marker in tail for marker in _UNSOLVABLE):
        return SolveError(f"{source}: the pip requirements cannot be resolved:\n{tail}",
                          hint="check the names and versions in the pip: section and its index options; "
                               "Python packages from conda keep their conda versions")
    return EngineError(f"{source}: uv could not resolve the pip section ({result.describe_exit()}):\n{tail}",
                       hint="check that every index, git and file URL in the pip: section is reachable from here")


def _tail(lines: Sequence[str]) -> str:
    return "\n".join(mask(line) for line in lines if line.strip()) or "(no output)"


def _pinned(entry: Mapping[str, Any], base: Path) -> PipPackage:
    name, version = str(entry["name"]), str(entry.get("version", ""))
    if "vcs" in entry:
        vcs = entry["vcs"]
        url = f"{vcs['type']}+{_location(vcs, base)}@{vcs['commit-id']}{_subdirectory(vcs)}"
        return PipPackage(name, version, url)
    if "directory" in entry:
        directory = entry["directory"]
        path = os.path.normpath(base / directory["path"])
        url = Path(path).as_uri() + _subdirectory(directory)
        return PipPackage(name, version, url, editable=path if directory.get("editable") else None)
    artifact = entry.get("archive") or _best_wheel(entry.get("wheels") or ()) or entry.get("sdist")
    if not artifact:
        raise EngineError(f"uv pinned {name} {version} without a source to install it from")
    sha256 = (artifact.get("hashes") or {}).get("sha256")
    return PipPackage(name, version, _location(artifact, base), sha256=sha256)


def _location(artifact: Mapping[str, Any], base: Path) -> str:
    if "url" in artifact:
        return str(artifact["url"])
    return Path(os.path.normpath(base / artifact["path"])).as_uri()


def _subdirectory(source: Mapping[str, Any]) -> str:
    return f"#subdirectory={source['subdirectory']}" if source.get("subdirectory") else ""


def _best_wheel(wheels: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The wheel an installer would pick among those uv found compatible with the target.

    Like pip's tag order: platform-specific over pure, a specific ABI over ``none``, and the
    newest manylinux level first.
    """
    def rank(wheel: Mapping[str, Any]) -> tuple[bool, bool, tuple[int, int]]:
        path = urlparse(str(wheel.get("url", ""))).path or str(wheel.get("path", ""))
        file = unquote(path).rsplit("/", 1)[-1].removesuffix(".whl")
        _python, abi, plat = (["", "", ""] + file.split("-"))[-3:]
        levels = [(int(m[1]), int(m[2])) if m[1] else _LEGACY_MANYLINUX[m[3]] for m in _MANYLINUX.finditer(plat + "_")]
        return plat != "any", abi != "none", max(levels, default=(0, 0))

    return max(wheels, key=rank, default=None)
