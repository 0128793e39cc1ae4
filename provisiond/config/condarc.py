"""conda's own configuration: ``.condarc`` files and ``CONDA_*`` variables, as a settings layer.

provisiond reads the keys that change what it solves and where it finds packages; its own
config (flag > ``PROVISIOND_*`` > config.toml) overrides them, and the default comes last
(``settings.load_settings``). The files are read in conda's order (``conda/base/constants.py``
``SEARCH_PATH``), then ``$CONDARC``, then the ``CONDA_*`` variables; a later source wins for a
single value and comes first in a list (conda merges lists, higher precedence first) or a map.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from provisiond.domain.errors import ConfigError

# condarc key -> how a CONDA_* variable spells it (lists are comma-separated, as conda reads them).
KEYS = ("channels", "channel_alias", "default_channels", "custom_channels", "channel_priority", "pkgs_dirs",
        "ssl_verify", "proxy_servers", "offline")
LISTS = ("channels", "default_channels", "pkgs_dirs")
MAPS = ("custom_channels", "proxy_servers")
_SEARCH = ("/etc/conda", "/var/lib/conda", "$CONDA_ROOT", "$XDG_CONFIG_HOME/conda", "~/.config/conda", "~/.conda")
# Where conda, mamba, micromamba and pixi keep extracted packages when nothing says otherwise;
# only those that exist are used (store/shared_cache.py reads them, never writes).
_DEFAULT_PKGS_DIRS = ("~/.conda/pkgs", "$CONDA_ROOT/pkgs", "$MAMBA_ROOT_PREFIX/pkgs", "~/miniforge3/pkgs",
                      "~/miniconda3/pkgs", "~/anaconda3/pkgs", "~/micromamba/pkgs", "~/.local/share/mamba/pkgs",
                      "~/.cache/rattler/cache/pkgs")


def _expand(path: str, environ: Mapping[str, str]) -> str | None:
    """``~`` and ``$VAR`` expanded from ``environ``; None when a variable it needs is unset."""
    for var in ("CONDA_ROOT", "XDG_CONFIG_HOME", "CONDA_PREFIX", "MAMBA_ROOT_PREFIX", "CONDARC"):
        token = f"${var}"
        if token in path:
            if not environ.get(var):
                return None
            path = path.replace(token, environ[var])
    if path.startswith("~"):
        home = environ.get("HOME") or os.path.expanduser("~")
        path = home + path[1:]
    return path


def search_path(environ: Mapping[str, str], system_root: str = "/") -> list[str]:
    """The condarc files that exist, lowest precedence first (conda's SEARCH_PATH, then $CONDARC)."""
    found: list[str] = []
    for raw in (*_SEARCH, "~", "$CONDA_PREFIX"):
        base = _expand(raw, environ)
        if base is None:
            continue
        if raw.startswith("/"):
            base = os.path.join(system_root, base.lstrip("/"))
        names = (".condarc",) if raw == "~" else (".condarc", "condarc")
        found += [p for p in (os.path.join(base, n) for n in names) if os.path.isfile(p)]
        if raw != "~":
            drop_in = os.path.join(base, "condarc.d")
            if os.path.isdir(drop_in):
                found += [os.path.join(drop_in, n) for n in sorted(os.listdir(drop_in))
                          if n.endswith((".yml", ".yaml")) and os.path.isfile(os.path.join(drop_in, n))]
    condarc = environ.get("CONDARC")
    if condarc and os.path.isfile(os.path.expanduser(condarc)):
        found.append(os.path.expanduser(condarc))
    return list(dict.fromkeys(found))


def default_pkgs_dirs(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The usual package caches of conda, mamba, micromamba and pixi (existing or not)."""
    dirs = (_expand(p, environ) for p in _DEFAULT_PKGS_DIRS)
    return tuple(dict.fromkeys(d for d in dirs if d))


def _read(path: str) -> dict[str, Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            doc = YAML(typ="safe", pure=True).load(f)  # libyaml refuses `[file:///x]`, which conda reads
    except (OSError, UnicodeDecodeError, YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: cannot read conda's configuration: {reason}",
                          hint="fix the file, or set conda_config = false in provisiond's config.toml") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a .condarc must be a mapping of settings",
                          hint="fix the file, or set conda_config = false in provisiond's config.toml")
    return {k: v for k, v in doc.items() if k in KEYS}


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in KEYS:
        raw = environ.get(f"CONDA_{key.upper()}")
        if raw is None or key in MAPS:
            continue
        values[key] = [v.strip() for v in raw.split(",") if v.strip()] if key in LISTS else raw
    return values


def layer(environ: Mapping[str, str], system_root: str = "/") -> dict[str, tuple[Any, str]]:
    """conda's settings as ``{key: (value, where from)}``: files in search order, then CONDA_* variables.

    A single value: the last source wins. A list: the last source's items first, duplicates dropped.
    A map: merged, the last source winning per key. ``where from`` names every source that gave it.
    With no ``pkgs_dirs`` anywhere, the usual caches of conda, mamba and pixi.
    """
    merged: dict[str, tuple[Any, str]] = {}
    sources = [(path, _read(path)) for path in search_path(environ, system_root)]
    sources.append(("env CONDA_*", _from_environ(environ)))
    for origin, values in sources:
        for key, value in values.items():
            if key in LISTS:
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{key} ({origin}): expected a list of strings")
                if key in merged:
                    old, was = merged[key]
                    merged[key] = (list(dict.fromkeys([*value, *old])), f"{origin}, {was}")
                    continue
            elif key in MAPS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} ({origin}): expected a mapping")
                value = {str(k): str(v) for k, v in value.items()}
                if key in merged:
                    old, was = merged[key]
                    merged[key] = ({**old, **value}, f"{origin}, {was}")
                    continue
            merged[key] = (value, origin)
    if "pkgs_dirs" not in merged:
        merged["pkgs_dirs"] = (list(default_pkgs_dirs(environ)), "conda's usual caches")
    return merged
