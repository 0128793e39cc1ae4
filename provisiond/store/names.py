"""A name's activation in the store (``activation/names/<name>/``): where it lives, and the env it points at.

stdlib only: cold start reads a name's target before anything else; activation, bundle and
unbundle use the same rule for what a name may be (a file name).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from provisiond.config.layout import NAME_TARGET
from provisiond.config.layout import NAMES as NAMES_DIR

if TYPE_CHECKING:
    from provisiond.config.settings import Paths

__all__ = ["name_activation_dir", "target_of_name"]


def name_activation_dir(paths: Paths, name: str) -> Path | None:
    """Where a name's activation lives in the store, or None for a name that is not a file name."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return None
    return paths.activation / NAMES_DIR / name


def target_of_name(paths: Paths, name: str) -> tuple[str, str] | None:
    """(env_key, prefix) a name's store activation points at, or None (unknown or not a file name)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return None
    values = {}
    try:
        with open(paths.activation / NAMES_DIR / name / NAME_TARGET, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                values[key] = value
    except (OSError, UnicodeDecodeError):
        return None
    if not values.get("env_key") or not values.get("prefix"):
        return None
    return values["env_key"], values["prefix"]
