"""Build real conda packages and local conda channels for tests, demos and benchmarks.

Everything is written by hand with the stdlib (py-rattler can read and index
packages but not create them), then indexed with ``rattler.index.index_fs``.
Output is deterministic: the same ``Pkg`` always yields the same sha256.
``.conda`` members are valid zstd frames of *stored* blocks (no compressor in the
stdlib), so those archives are about as large as their contents.
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
import json
import os
import random
import tarfile
import zipfile
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from rattler import Subdir
from rattler.index import index_fs

__all__ = [
    "PLACEHOLDER",
    "Pkg",
    "build_channel",
    "build_package",
    "demo_packages",
    "generated_packages",
    "hello_pkg",
    "write_repodata_only_channel",
]

# Long like conda-build's placeholder, so that binary replacement has room for real prefixes.
PLACEHOLDER: str = "/opt/provisiond-placeholder" + "_placehold" * 17  # 197 chars

_EPOCH_S = 1_700_000_000  # fixed mtime / timestamp: reproducible archives
_LICENSE = "BSD-3-Clause"
_FORMATS = (".conda", ".tar.bz2")
_T = TypeVar("_T")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    # Copy, so later mutation of the caller's dict cannot change a built Pkg.
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Pkg:
    """Description of one conda package to build."""

    name: str
    version: str = "1.0"
    build: str = "0"
    build_number: int = 0
    depends: tuple[str, ...] = ()
    noarch: bool = False
    files: Mapping[str, bytes | str] = field(default_factory=dict, hash=False)
    text_prefix: Mapping[str, str] = field(default_factory=dict, hash=False)
    binary_prefix: Mapping[str, bytes] = field(default_factory=dict, hash=False)
    executables: tuple[str, ...] = ()
    format: str = ".conda"
    constrains: tuple[str, ...] = ()  # run_constrained

    def __post_init__(self) -> None:
        for name in ("files", "text_prefix", "binary_prefix"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "depends", tuple(self.depends))
        object.__setattr__(self, "constrains", tuple(self.constrains))
        object.__setattr__(self, "executables", tuple(self.executables))
        if self.format not in _FORMATS:
            raise ValueError(f"{self.name}: format must be one of {_FORMATS}, got {self.format!r}")
        groups = (self.files, self.text_prefix, self.binary_prefix)
        seen = [p for g in groups for p in g]
        if len(seen) != len(set(seen)):
            raise ValueError(f"{self.name}: a path is in more than one of files/text_prefix/binary_prefix")
        for p in seen:
            if p.startswith("/") or p.startswith("info/") or ".." in Path(p).parts:
                raise ValueError(f"{self.name}: bad relative path {p!r}")
        missing = set(self.executables) - set(self.files) - set(self.text_prefix)
        if missing:
            raise ValueError(f"{self.name}: executables not among files/text_prefix: {sorted(missing)}")
        for p, data in self.binary_prefix.items():
            if PLACEHOLDER.encode() not in data:
                raise ValueError(f"{self.name}: binary_prefix file {p!r} lacks PLACEHOLDER")

    @property
    def dist_name(self) -> str:
        """``name-version-build``, the archive name without extension."""
        return f"{self.name}-{self.version}-{self.build}"

    @property
    def filename(self) -> str:
        """The archive file name, e.g. ``hello-1.0-0.conda``."""
        return self.dist_name + self.format


# --- low-level archive writers -------------------------------------------------------


def _zstd_stored(data: bytes) -> bytes:
    """Wrap ``data`` in a valid zstd frame of raw (uncompressed) blocks."""
    # The zstd format allows "Raw" blocks, so a conforming frame needs no compressor:
    # this keeps the library stdlib-only. Header: 8-byte content size, 128 KiB window.
    block = 128 * 1024
    out: list[bytes | memoryview] = [b"\x28\xb5\x2f\xfd", bytes([0xC0, (17 - 10) << 3]),
                                     len(data).to_bytes(8, "little")]
    view = memoryview(data)
    for off in range(0, max(len(data), 1), block):
        chunk = view[off : off + block]
        last = off + block >= len(data)
        out += [((len(chunk) << 3) | int(last)).to_bytes(3, "little"), chunk]  # block type 0 = Raw
    return b"".join(out)


def _tar(members: Iterable[tuple[str, bytes, int]]) -> bytes:
    """An uncompressed tar of (path, data, mode) members with normalised metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data, mode in members:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, _EPOCH_S
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_zip(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """A stored (not deflated) zip with fixed timestamps, as ``.conda`` requires."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # unix, regardless of the host: same bytes everywhere
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


# --- package building -------------------------------------------------------------------


def _payload(pkg: Pkg) -> dict[str, bytes]:
    files = {p: d.encode() if isinstance(d, str) else bytes(d) for p, d in pkg.files.items()}
    files |= {p: t.encode() for p, t in pkg.text_prefix.items()}
    files |= {p: bytes(b) for p, b in pkg.binary_prefix.items()}
    return dict(sorted(files.items()))


def _index_json(pkg: Pkg, subdir: str) -> dict[str, Any]:
    index: dict[str, Any] = {
        "build": pkg.build,
        "build_number": pkg.build_number,
        "depends": list(pkg.depends),
        "license": _LICENSE,
        "name": pkg.name,
        "subdir": subdir,
        "timestamp": _EPOCH_S * 1000,  # conda timestamps are milliseconds
        "version": pkg.version,
    }
    if pkg.constrains:
        index["constrains"] = list(pkg.constrains)
    if pkg.noarch:
        index["noarch"] = "generic"
    else:
        plat = Subdir(subdir)
        index["arch"], index["platform"] = str(plat.arch), plat.only_platform
    return index


def _info_files(pkg: Pkg, subdir: str, payload: Mapping[str, bytes]) -> dict[str, bytes]:
    modes = {p: "text" for p in pkg.text_prefix} | {p: "binary" for p in pkg.binary_prefix}
    entries = []
    for path, data in payload.items():
        entry: dict[str, Any] = {"_path": path, "path_type": "hardlink"}
        if path in modes:
            entry |= {"prefix_placeholder": PLACEHOLDER, "file_mode": modes[path]}
        entry |= {"sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}
        entries.append(entry)
    info = {
        "info/index.json": _index_json(pkg, subdir),
        "info/paths.json": {"paths": entries, "paths_version": 1},
        "info/about.json": {"summary": f"{pkg.name} (built by provisiond.testing)", "license": _LICENSE},
    }
    out = {k: json.dumps(v, indent=2, sort_keys=True).encode() + b"\n" for k, v in info.items()}
    out["info/files"] = "".join(f"{p}\n" for p in payload).encode()
    if modes:  # legacy format, still read by older tools: "<placeholder> <mode> <path>"
        lines = (f"{PLACEHOLDER} {mode} {path}\n" for path, mode in sorted(modes.items()))
        out["info/has_prefix"] = "".join(lines).encode()
    return dict(sorted(out.items()))


def build_package(pkg: Pkg, subdir_dir: Path, subdir: str) -> Path:
    """Write ``pkg`` as an archive into ``subdir_dir`` (for subdir ``subdir``); return its path."""
    if pkg.noarch != (subdir == "noarch"):
        raise ValueError(f"{pkg.name}: noarch={pkg.noarch} does not fit subdir {subdir!r}")
    payload = _payload(pkg)
    execs = set(pkg.executables)
    pkg_members = [(p, d, 0o755 if p in execs else 0o644) for p, d in payload.items()]
    info_members = [(p, d, 0o644) for p, d in _info_files(pkg, subdir, payload).items()]

    subdir_dir.mkdir(parents=True, exist_ok=True)
    target = subdir_dir / pkg.filename
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if pkg.format == ".tar.bz2":
        # info/ first, like conda-package-handling: streaming readers find metadata early.
        tmp.write_bytes(bz2.compress(_tar(info_members + pkg_members), 9))
    else:
        _write_zip(tmp, [
            ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
            (f"info-{pkg.dist_name}.tar.zst", _zstd_stored(_tar(info_members))),
            (f"pkg-{pkg.dist_name}.tar.zst", _zstd_stored(_tar(pkg_members))),
        ])
    os.replace(tmp, target)  # atomic: a concurrent indexer never sees half an archive
    return target


# --- channels ---------------------------------------------------------------------------


def _run_sync(fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine factory to completion, even when called from inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fn())
    # Inside a running loop (async tests/fixtures) asyncio.run is forbidden: use a thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn())).result()


def _empty_repodata(subdir: str) -> dict[str, Any]:
    return {
        "info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "removed": [], "repodata_version": 1,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")))
    os.replace(tmp, path)


def build_channel(root: Path, pkgs: Iterable[Pkg], platform: str | None = None) -> Path:
    """Build ``pkgs`` into a local channel at ``root`` (noarch + one platform), index it, return ``root``."""
    root = Path(root)
    subdir = platform or str(Subdir.current())
    for sd in ("noarch", subdir):
        (root / sd).mkdir(parents=True, exist_ok=True)
    for pkg in pkgs:
        sd = "noarch" if pkg.noarch else subdir
        build_package(pkg, root / sd, sd)
    # force=True: a rebuilt archive with the same file name must not keep stale hashes.
    # No .zst/shards: plain repodata.json is all a file:// channel needs, and it stays in sync.
    _run_sync(lambda: index_fs(root, force=True, write_zst=False, write_shards=False))
    for sd in ("noarch", subdir):
        # The indexer skips empty subdirs, but the solver needs every requested subdir.
        if not (root / sd / "repodata.json").exists():
            _write_json(root / sd / "repodata.json", _empty_repodata(sd))
    return root


# --- ready-made packages -------------------------------------------------------------------


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


def _binary_blob(tag: str) -> bytes:
    # Placeholder as a NUL-terminated C string, with data around it that must survive untouched.
    return b"\x7fPVD" + tag.encode() + b"\0" + PLACEHOLDER.encode() + b"/lib\0" + b"TAIL\x00\x01\x02\xff"


def hello_pkg(
    name: str = "hello",
    version: str = "1.0",
    depends: Iterable[str] = (),
    message: str | None = None,
    **kw: Any,
) -> Pkg:
    """A package with a runnable ``bin/<name>``, a binary-prefix file, activation scripts and env vars."""
    env = _env_name(name)
    message = message or f"Hello {version}"
    files: dict[str, bytes | str] = {
        f"etc/conda/activate.d/{name}.sh": f"export {env}_ACTIVATED=1\n",
        f"etc/conda/deactivate.d/{name}.sh": f"unset {env}_ACTIVATED\n",
        # fish runs only .fish scripts (conda's rule): the same effect, in fish.
        f"etc/conda/activate.d/{name}.fish": f"set -gx {env}_ACTIVATED 1\n",
        f"etc/conda/deactivate.d/{name}.fish": f"set -e {env}_ACTIVATED\n",
    }
    text = {
        f"bin/{name}": f'#!/bin/sh\necho "{message} from {PLACEHOLDER}"\n',
        # A text-prefix JSON file: after install it names the real prefix.
        f"etc/conda/env_vars.d/{name}.json": json.dumps({f"{env}_HOME": f"{PLACEHOLDER}/share/{name}"}),
    }
    binary = {f"lib/{name}.bin": _binary_blob(f"{name}-{version}")}
    # Caller-supplied mappings extend (and may override) the defaults rather than replace them.
    files |= kw.pop("files", {})
    text |= kw.pop("text_prefix", {})
    binary |= kw.pop("binary_prefix", {})
    execs = (f"bin/{name}", *kw.pop("executables", ()))
    return Pkg(name, version, depends=tuple(depends), files=files, text_prefix=text,
               binary_prefix=binary, executables=execs, **kw)


def demo_packages() -> list[Pkg]:
    """A small realistic set: hello 1.0 (.conda) / 2.0 (.tar.bz2), libgreet, noarch greet-data, tool-a."""
    blob = random.Random(0).randbytes(3 * 1024 * 1024)  # incompressible, deterministic, fast
    libgreet = Pkg(
        "libgreet", "1.0",
        files={"include/greet.h": "const char *greet(void);\n"},
        binary_prefix={"lib/libgreet.so": _binary_blob("libgreet")},
    )
    data = Pkg(
        "greet-data", "1.0", noarch=True,
        files={"share/greet-data/blob.bin": blob, "share/greet-data/README": "Deterministic test payload.\n"},
    )
    return [
        libgreet,
        hello_pkg("hello", "1.0", depends=("libgreet >=1.0",), format=".conda"),
        hello_pkg("hello", "2.0", depends=("libgreet >=1.0",), format=".tar.bz2"),
        data,
        hello_pkg("tool-a", "1.0", depends=("libgreet >=1.0",), message="tool-a says hi"),
    ]


def generated_packages(n: int = 100, files_per_pkg: int = 50, seed: int = 0) -> list[Pkg]:
    """``n`` deterministic packages of ``files_per_pkg`` files each, in dependency chains of up to 5."""
    rng = random.Random(seed)
    pkgs = []
    for i in range(n):
        name = f"gen-{i:04d}"
        # One text-prefix script, one binary-prefix file, the rest plain files of 256 B - 8 KiB.
        text = {f"bin/{name}": f'#!/bin/sh\necho "{name} from {PLACEHOLDER}"\n'} if files_per_pkg >= 1 else {}
        binary = {f"lib/{name}.bin": _binary_blob(name)} if files_per_pkg >= 2 else {}
        files: dict[str, bytes | str] = {
            f"share/{name}/f{j:04d}.dat": rng.randbytes(rng.randint(256, 8192))
            for j in range(files_per_pkg - len(text) - len(binary))
        }
        pkgs.append(Pkg(
            name,
            f"1.{i % 7}",
            depends=(f"gen-{i - 1:04d}",) if i % 5 else (),
            files=files, text_prefix=text, binary_prefix=binary, executables=tuple(text),
            format=".tar.bz2" if i % 4 == 3 else ".conda",  # mostly .conda, like real channels
        ))
    return pkgs


# --- synthetic repodata for solver benchmarks ----------------------------------------------


def _synthetic_versions(rng: random.Random) -> list[str]:
    """6-20 strictly increasing versions (by major.minor), so the last one is the newest."""
    versions, major, minor = [], rng.randint(0, 3), 0
    for _ in range(rng.randint(6, 20)):
        if rng.random() < 0.2:
            major, minor = major + 1, 0
        else:
            minor += rng.randint(1, 2)
        versions.append(f"{major}.{minor}.{rng.randint(0, 3)}")
    return versions


def _synthetic_depends(rng: random.Random, names: list[tuple[str, list[str]]]) -> list[str]:
    """0-5 specs on earlier names, each satisfied by that name's newest version."""
    deps = set()
    for _ in range(rng.randint(0, min(len(names), 5))):
        # Half the time pick a low-numbered "core" name, like libc/zlib/python in real channels.
        if rng.random() < 0.5:
            idx = min(int(rng.expovariate(1 / 30)), len(names) - 1)
        else:
            idx = rng.randrange(len(names))
        dep, dep_versions = names[idx]
        low, upper = rng.choice(dep_versions), int(dep_versions[-1].split(".")[0]) + 1
        deps.add(rng.choice((dep, f"{dep} >={low}", f"{dep} >={low},<{upper}")))
    return sorted(deps)


def write_repodata_only_channel(
    root: Path, n_records: int = 50_000, platform: str | None = None, seed: int = 0
) -> Path:
    """Write a channel of ~``n_records`` synthetic records (repodata.json only, no archives); return ``root``.

    Names are ``syn-00000``, ``syn-00001``...; a name depends only on lower-numbered names and the
    newest version of every name satisfies every spec on it, so any set of names is solvable.
    """
    rng = random.Random(seed)
    subdir = platform or str(Subdir.current())
    arch, plat = Subdir(subdir).arch, Subdir(subdir).only_platform
    repodata = _empty_repodata(subdir)
    names: list[tuple[str, list[str]]] = []
    count = 0
    while count < n_records:
        name, versions = f"syn-{len(names):05d}", _synthetic_versions(rng)
        for vi, version in enumerate(versions):
            for build_number in range(rng.choice((1, 1, 2, 3))):
                ext = ".conda" if vi >= len(versions) // 2 else ".tar.bz2"  # newer releases are .conda
                build = f"h{len(names):07x}_{build_number}"
                fn = f"{name}-{version}-{build}{ext}"
                repodata["packages.conda" if ext == ".conda" else "packages"][fn] = {
                    "arch": str(arch), "build": build, "build_number": build_number,
                    # Each build gets its own depends: older builds widen the solver's search space.
                    "depends": _synthetic_depends(rng, names), "license": _LICENSE,
                    "md5": hashlib.md5(fn.encode()).hexdigest(), "name": name, "platform": plat,
                    "sha256": hashlib.sha256(fn.encode()).hexdigest(),
                    "size": rng.randint(10_000, 50_000_000), "subdir": subdir,
                    "timestamp": (_EPOCH_S - rng.randint(0, 10**8)) * 1000, "version": version,
                }
                count += 1
        names.append((name, versions))
    root = Path(root)
    _write_json(root / subdir / "repodata.json", repodata)
    _write_json(root / "noarch" / "repodata.json", _empty_repodata("noarch"))
    return root
