"""A conda ``python`` package over the host's CPython, and hand-written wheels: pip sections in tests.

The package makes the env's prefix a venv of the host interpreter: ``bin/python3.11`` is a bash
wrapper that runs the real interpreter with ``argv[0]`` in the prefix, so CPython finds the
prefix's ``pyvenv.cfg`` and uses the prefix as ``sys.prefix``. ``uv pip install --python
<prefix>/bin/python`` then installs into ``<prefix>/lib/python3.X/site-packages`` and writes
entry points that start with ``#!<prefix>/bin/python3.X``, as with a real conda Python.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from provisiond.testing.channel import PLACEHOLDER, Pkg

__all__ = ["build_wheel", "venv_python_pkg"]


def venv_python_pkg(version: str | None = None) -> Pkg:
    """A conda package ``python`` (the host's version) whose interpreter is the host's CPython."""
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    real = Path(sys.base_prefix) / "bin" / f"python{short}"
    if not real.exists():
        raise RuntimeError(f"no interpreter at {real} to wrap")
    wrapper = (
        "#!/bin/bash\n"
        "# argv[0] in this prefix: CPython reads ../pyvenv.cfg and makes the prefix sys.prefix.\n"
        f'exec -a "{PLACEHOLDER}/bin/python{short}" "{real}" "$@"\n'
    )
    names = (f"bin/python{short}", "bin/python3", "bin/python")
    cfg = f"home = {real.parent}\ninclude-system-site-packages = false\nversion = {platform.python_version()}\n"
    return Pkg(
        "python", version or platform.python_version(), build="host_0",
        files={"pyvenv.cfg": cfg, f"lib/python{short}/site-packages/README.txt": "site-packages of the env\n"},
        text_prefix={name: wrapper for name in names},
        executables=names,
    )


def build_wheel(directory: Path, name: str, version: str, *, files: Mapping[str, str] | None = None,
                requires: Iterable[str] = (), scripts: Mapping[str, str] | None = None) -> Path:
    """Write a pure-Python wheel into ``directory`` and return its path (same input, same bytes).

    Args:
        files: paths inside site-packages → text; default: ``<name>/__init__.py`` with ``VERSION``.
        requires: ``Requires-Dist`` lines.
        scripts: console scripts, ``{"greet": "greetlib:main"}``.
    """
    module = name.replace("-", "_")
    dist = f"{module}-{version}"
    info = f"{dist}.dist-info"
    members = dict(files or {f"{module}/__init__.py": f"VERSION = {version!r}\n"})
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                *(f"Requires-Dist: {r}" for r in requires)]
    members[f"{info}/METADATA"] = "\n".join(metadata) + "\n"
    members[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: provisiond.testing\nRoot-Is-Purelib: true\n"
                                "Tag: py3-none-any\n")
    if scripts:
        entry_points = "".join(f"{k} = {v}\n" for k, v in scripts.items())
        members[f"{info}/entry_points.txt"] = "[console_scripts]\n" + entry_points
    record = [f"{path},sha256={_digest(text.encode())},{len(text.encode())}" for path, text in members.items()]
    members[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, text in members.items():
            entry = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            zf.writestr(entry, text, compress_type=zipfile.ZIP_DEFLATED)
    return target


def _digest(data: bytes) -> str:
    """RECORD's hash form: urlsafe base64 of the sha256, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
