"""The micromamba executable: finding it, the environment it runs in, and its start-up probes
(``--version``, ``info --json``), run once before the daemon serves."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rattler

from provisiond.config.settings import Settings
from provisiond.domain.errors import ConfigError
from provisiond.engines._micromamba_output import extract_json
from provisiond.engines.virtual import detect

log = logging.getLogger(__name__)

MIN_VERSION = (2, 0)
TESTED, TESTED_MAJOR = "2.8.1", 2  # docs/micromamba.md "Supported versions"
PROBE_TIMEOUT = 30.0
_SCRUBBED = ("CONDA_", "MAMBA_", "_CE_", "CONDARC", "MAMBARC")
_KEPT = ("CONDA_OVERRIDE_",)  # user overrides of virtual packages (__cuda, __glibc): honoured by both engines
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
INSTALL_HINT = "install micromamba 2.x (see docs/micromamba.md), or run with --engine rattler"


def find_micromamba(settings: Settings, environ: Mapping[str, str]) -> Path | None:
    """The micromamba to use: ``micromamba_path`` setting > ``MAMBA_EXE`` > ``PATH``; None if absent.

    Raises:
        ConfigError: ``micromamba_path`` is set but is not an executable file.
    """
    if settings.micromamba_path:
        exe = Path(settings.micromamba_path).expanduser()
        if not _is_executable(exe):
            raise ConfigError(f"micromamba_path={settings.micromamba_path}: not an executable file",
                              hint=INSTALL_HINT)
        return exe.absolute()
    mamba_exe = environ.get("MAMBA_EXE")
    if mamba_exe:
        if _is_executable(Path(mamba_exe)):
            return Path(mamba_exe).absolute()
        log.warning("MAMBA_EXE=%s is not an executable file; looking on PATH", mamba_exe)
    found = shutil.which("micromamba", path=environ.get("PATH", os.defpath))
    return Path(found).absolute() if found else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def micromamba_environ(environ: Mapping[str, str], root: Path, pkgs: Path,
                       connect_timeout: float | None = None) -> dict[str, str]:
    """The child's environment: ``environ`` without conda/mamba settings, plus ours."""
    env = {k: v for k, v in environ.items() if k.startswith(_KEPT) or not k.startswith(_SCRUBBED)}
    env["MAMBA_ROOT_PREFIX"] = str(root)
    env["CONDA_PKGS_DIRS"] = str(pkgs)  # read as a comma-separated list (contract §2.1)
    # Else libmamba drops `python` from pip's depends as it loads repodata (the records would differ
    # from rattler's). It does not stop 2.6+ adding pip to a request: see _micromamba_request.py.
    env["MAMBA_ADD_PIP_AS_PYTHON_DEPENDENCY"] = "false"
    # `create` registers every prefix in ~/.conda/environments.txt: hundreds of content-addressed
    # envs would flood `conda env list`. Its HOME is the root prefix; provisiond registers names itself.
    env["HOME"] = str(root)
    if connect_timeout is not None:  # libmamba's remote_connect_timeout_secs (whole seconds)
        env["MAMBA_REMOTE_CONNECT_TIMEOUT_SECS"] = str(max(1, round(connect_timeout)))
    return env


def parse_version(text: str) -> tuple[int, int, int]:
    """``(2, 8, 1)`` from ``micromamba --version`` output such as ``2.8.1``."""
    match = _VERSION.search(text)
    if match is None:
        raise ValueError(f"no version in {text.strip()[:80]!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def probe(exe: Path, env: Mapping[str, str], *args: str) -> str:
    """``exe ARGS``'s output; a ConfigError when it cannot run or fails."""
    argv = [str(exe), *args]
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{exe}: cannot run {' '.join(args)}: {exc}", hint=INSTALL_HINT) from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise ConfigError(f"{exe} {' '.join(args)} failed (exit {done.returncode}): {' / '.join(last)}",
                          hint=INSTALL_HINT)
    return done.stdout


def probe_version(exe: Path, env: Mapping[str, str]) -> str:
    """``--version``, refused below 2.0 and warned about above the major version we tested."""
    text = probe(exe, env, "--version").strip()
    try:
        version = parse_version(text)
    except ValueError:
        raise ConfigError(f"{exe} --version printed {text[:80]!r}: not micromamba?",
                          hint=INSTALL_HINT) from None
    if version[:2] < MIN_VERSION:
        raise ConfigError(f"micromamba {text} at {exe} is too old: provisiond needs 2.0 or newer",
                          hint=INSTALL_HINT)
    if version[0] > TESTED_MAJOR:
        log.warning("micromamba %s at %s is newer than the 2.x provisiond was tested with (%s); "
                    "if its answers differ from the rattler engine's, use --engine rattler", text, exe,
                    TESTED)
    return text


def probe_info(exe: Path, env: Mapping[str, str], root: Path) -> dict[str, Any]:
    """``info --json``: the platform and virtual packages micromamba itself will solve for."""
    try:
        return extract_json(probe(exe, env, "info", "--json", "--no-rc", "-r", str(root)))
    except (ConfigError, ValueError) as exc:
        log.warning("micromamba info --json failed (%s); detecting platform and virtual packages with rattler",
                    exc)
        return {"platform": str(rattler.Subdir.current()),
                "virtual packages": detect()}
