"""Where things are: the config file, the store, the socket and per-user state.

Plain ``os.path`` and strings only, so ``provisionctl`` finds the daemon's socket without paying
for dataclasses, pathlib or platformdirs (tens of milliseconds on every command). ``settings.py``
builds the daemon's typed Settings on top of this; both share one precedence rule:
CLI flag > ``PROVISIOND_*`` environment > TOML config file > default.
"""

from __future__ import annotations

import os
import sys

# provisionctl's hot path imports this module: no typing/collections at run time (~3 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

APP = "provisiond"
# The files that make a directory a project (and what the shell hooks look for).
SPEC_FILES = ("environment.yml", "environment.yaml")
# AF_UNIX paths are limited to 108 bytes (sun_path); leave room for the NUL.
MAX_SOCKET_PATH = 100
KEYS = ("home", "socket", "state", "engine", "micromamba_path", "micromamba_install", "max_builds", "solve_ttl",
        "channel_alias",
        "default_channels",
        "watch_debounce_ms", "watch_step_ms", "gc_days", "cache_budget_bytes", "trusted_prefixes",
        "log_file",
        "max_connections", "read_timeout", "keep_builds", "keep_solves", "keep_solves_days",
        "connect_timeout", "fetch_timeout", "solve_timeout", "changeps1", "write_project_locks",
        # conda's keys (.condarc maps onto them: config/condarc.py), and whether to read .condarc at all
        "channels", "default_channels", "custom_channels", "channel_priority", "pkgs_dirs", "ssl_verify",
        "proxy_servers", "offline", "conda_config", "environments_txt",
        "kernels", "jupyter_data_dir", "audit_db",
        "registry_auth_file", "insecure_registries", "mirrors")


def _user_dir(environ: Mapping[str, str], xdg: str, fallback: str, kind: str) -> str:
    """The XDG base dir for ``kind`` (what platformdirs answers on Linux), read from ``environ``."""
    if sys.platform.startswith("linux"):
        base = environ.get(xdg) or os.path.join(environ.get("HOME") or os.path.expanduser("~"), fallback)
        return os.path.join(base, APP)
    import platformdirs

    return str(getattr(platformdirs, f"user_{kind}_dir")(APP))


def config_file(environ: Mapping[str, str]) -> str:
    return environ.get("PROVISIOND_CONFIG") or os.path.join(
        _user_dir(environ, "XDG_CONFIG_HOME", ".config", "config"), "config.toml")


def read_config(file: str) -> dict[str, Any]:
    """The TOML config file as flat keys (``[engine] name/micromamba_path`` folded in); {} if absent."""
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        from provisiond.domain.errors import ConfigError

        raise ConfigError(f"{file}: {exc}", hint="fix or remove the config file") from None
    import tomllib  # paid only when a config file exists

    from provisiond.domain.errors import ConfigError

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}", hint="fix or remove the config file") from None
    engine = data.pop("engine", None)
    if isinstance(engine, dict):
        if "name" in engine:
            data["engine"] = engine["name"]
        for key in ("micromamba_path", "micromamba_install"):
            if key in engine:
                data[key] = engine[key]
    elif engine is not None:
        data["engine"] = engine
    return data


class Sources:
    """The three layers of settings, asked key by key in precedence order."""

    def __init__(self, overrides: Mapping[str, Any] | None, environ: Mapping[str, str],
                 file: str | None = None) -> None:
        self.environ = environ
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.env = {k: environ[f"PROVISIOND_{k.upper()}"] for k in KEYS if f"PROVISIOND_{k.upper()}" in environ}
        self.file = file or config_file(environ)
        self.from_file = read_config(self.file)

    def pick(self, key: str) -> tuple[Any, str] | None:
        """(value, where it came from), or None for the default."""
        for source, values in (("flag", self.overrides), ("env", self.env), (self.file, self.from_file)):
            if key in values:
                return values[key], source
        return None

    def path(self, key: str) -> str | None:
        """An absolute path setting (``~`` expanded), or None for the default."""
        choice = self.pick(key)
        return os.path.abspath(os.path.expanduser(str(choice[0]))) if choice else None

    def home(self) -> str:
        return self.path("home") or _user_dir(self.environ, "XDG_DATA_HOME", ".local/share", "data")

    def socket(self) -> str:
        socket = self.path("socket")
        if socket is None:
            runtime = self.environ.get("XDG_RUNTIME_DIR")
            if runtime and self.pick("home") is None:
                socket = os.path.join(runtime, APP, "provisiond.sock")
            else:
                # No per-user runtime dir (containers, su): keep the socket beside the store it serves.
                socket = os.path.join(self.home(), "provisiond.sock")
        if len(socket) > MAX_SOCKET_PATH:
            from provisiond.domain.errors import ConfigError

            raise ConfigError(f"socket path {socket} is {len(socket)} bytes; Unix sockets allow about "
                              f"{MAX_SOCKET_PATH}", hint="set a shorter path with --socket or PROVISIOND_SOCKET")
        return socket

    def state(self) -> str:
        state = self.path("state")
        if state is not None:
            return state
        # Never inside the store: a store may be copied into an image, secrets must not follow.
        state = _user_dir(self.environ, "XDG_STATE_HOME", ".local/state", "state")
        if self.pick("home") is not None:
            import hashlib

            state = os.path.join(state, "stores", hashlib.sha256(self.home().encode()).hexdigest()[:12])
        return state
