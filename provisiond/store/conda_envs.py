"""conda's list of environments (``~/.conda/environments.txt``): our named envs in it, and only those.

``conda env list``, ``micromamba env list``, VS Code and PyCharm read this file (one prefix per
line) to find environments outside conda's own ``envs_dirs``. ``sync`` rewrites our part of it:
the prefixes of the store's named envs that exist, added; lines under our ``envs/`` that no name
uses any more (a removed name, a name re-pointed to a new build), dropped. Every other line
(conda's, micromamba's, comments) is kept as it is. The ``environments_txt`` setting turns it off
or moves it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from provisiond.config import layout
from provisiond.config.settings import Settings
from provisiond.store.files import write_atomic
from provisiond.store.registry import NameRecord

log = logging.getLogger(__name__)


def prefixes(settings: Settings, names: Iterable[NameRecord]) -> list[str]:
    """The prefixes of ``names`` that point at an env, each once, sorted (no stat: a name's env is
    published before the name points at it, and gc keeps every env a name points at)."""
    return sorted({layout.prefix(str(settings.paths.home), n.env_key) for n in names if n.env_key})


def merged(text: str, envs_dir: str, ours: list[str]) -> str:
    """``text`` (the file) with our lines (those under ``envs_dir``) replaced by ``ours``."""
    mine = envs_dir.rstrip("/") + "/"
    kept = [line for line in text.splitlines() if not line.strip().startswith(mine)]
    present = {line.strip() for line in kept}
    lines = kept + [p for p in ours if p not in present]
    return "".join(f"{line}\n" for line in lines)


def sync(settings: Settings, names: Iterable[NameRecord]) -> bool:
    """Make the file list exactly our named envs among its other lines; True when it changed.

    Never raises: conda's file is a courtesy, a failure to write it is logged.
    """
    path = settings.environments_txt
    if path is None:
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s (conda env list will not show our envs)", path, exc)
        return False
    new = merged(text, str(settings.paths.envs), prefixes(settings, names))
    if new == text:
        return False
    try:
        mode = path.stat().st_mode & 0o777 if text else 0o644
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, new, mode)
    except OSError as exc:
        log.warning("cannot write %s: %s (conda env list will not show our envs)", path, exc)
        return False
    return True
