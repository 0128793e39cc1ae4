"""Settings and the paths derived from them, loaded once by each ``main()``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisiond.config import layout
from provisiond.config.locations import Sources
from provisiond.domain.errors import ConfigError

ENGINES = ("auto", "rattler", "micromamba")


@dataclass(frozen=True, slots=True)
class Paths:
    """Every file location of one store, derived from its root (DESIGN.md, "Store layout")."""

    home: Path
    socket: Path
    # Per-user files that must stay out of the shared store: project activation scripts with
    # values from .env (mode 0600 in 0700 dirs).
    state: Path

    @property
    def pkgs(self) -> Path:
        return self.home / layout.PKGS

    @property
    def envs(self) -> Path:
        return self.home / layout.ENVS

    @property
    def building(self) -> Path:
        return self.home / layout.ENVS / layout.BUILDING

    @property
    def locks(self) -> Path:
        return self.home / layout.LOCKS

    @property
    def logs(self) -> Path:
        return self.home / layout.LOGS

    @property
    def repodata_cache(self) -> Path:
        return self.home / "cache" / "repodata"

    @property
    def uv_cache(self) -> Path:
        """uv's cache for pip sections: inside the store, so installs hardlink from it."""
        return self.home / "cache" / "uv"

    @property
    def db(self) -> Path:
        return self.home / layout.DB

    @property
    def daemon_lock(self) -> Path:
        return self.home / layout.DAEMON_LOCK

    @property
    def activation(self) -> Path:
        return self.home / layout.ACTIVATION

    @property
    def credentials(self) -> Path:
        """Channel tokens and passwords (credentials.py): per user, never in the store."""
        return self.state / layout.CREDENTIALS

    @property
    def leases(self) -> Path:
        return self.home / layout.LEASES

    @property
    def projects_state(self) -> Path:
        """Per-project activation, mirroring the project's absolute path under it."""
        return self.state / layout.PROJECTS

    def prefix(self, env_key: str) -> Path:
        """The published prefix of an env: short enough for conda's 255-char relocation limit."""
        return Path(layout.prefix(str(self.home), env_key))


@dataclass(frozen=True, slots=True)
class Settings:
    paths: Paths
    engine: str = "auto"
    micromamba_path: str | None = None
    max_builds: int = 2
    solve_ttl: float = 3600.0
    channel_alias: str = "https://conda.anaconda.org/"
    # watchfiles: yield a batch after step_ms of quiet, at most debounce_ms after the first event.
    watch_debounce_ms: int = 1600
    watch_step_ms: int = 100
    # gc: envs nobody references are kept this long after their last use; None = no cache budget.
    gc_days: float = 30.0
    cache_budget_bytes: int | None = None
    # Projects at or under these real paths need no `provisionctl allow` (direnv's whitelist.prefix).
    trusted_prefixes: tuple[str, ...] = ()
    # The API: connections open at once (more get a 503), and seconds a client may take to send
    # a request's head or body (then it is disconnected, or gets a 408).
    max_connections: int = 64
    read_timeout: float = 10.0
    # Registry growth (retention.py): build rows (and their logs) kept, cached solves kept, and the
    # age after which a cached solve goes (never younger than solve_ttl).
    keep_builds: int = 200
    keep_solves: int = 1000
    keep_solves_days: float = 30.0
    # Channels (the engine): seconds to connect to a channel server, seconds it may stay silent
    # while sending repodata or a package, and the limit for a whole solve (repodata included).
    connect_timeout: float = 10.0
    fetch_timeout: float = 30.0
    solve_timeout: float = 600.0
    # A watched project without a conda-lock.yml gets one written beside its environment file
    # (docs/lockfiles.md); a project that has one always keeps it current.
    write_project_locks: bool = False
    config_file: Path | None = None
    # None: log to stderr (the journal under systemd). A file is reopened on SIGHUP (logrotate).
    log_file: Path | None = None

    def to_wire(self) -> dict[str, Any]:
        """The settings in effect, as ``/v1/status`` shows them (after a SIGHUP reload, the new ones)."""
        from provisiond.domain.urls import mask

        return {"engine": self.engine, "max_builds": self.max_builds, "solve_ttl": self.solve_ttl,
                "channel_alias": mask(self.channel_alias), "watch_debounce_ms": self.watch_debounce_ms,
                "watch_step_ms": self.watch_step_ms, "gc_days": self.gc_days,
                "cache_budget_bytes": self.cache_budget_bytes, "trusted_prefixes": list(self.trusted_prefixes),
                "keep_builds": self.keep_builds, "keep_solves": self.keep_solves,
                "keep_solves_days": self.keep_solves_days,
                "connect_timeout": self.connect_timeout, "fetch_timeout": self.fetch_timeout,
                "solve_timeout": self.solve_timeout, "write_project_locks": self.write_project_locks,
                "config_file": str(self.config_file) if self.config_file else None,
                "log_file": str(self.log_file) if self.log_file else None}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build Settings. Precedence: CLI flag (``overrides``) > ``PROVISIOND_*`` env > TOML file > default.

    Keys: ``home``, ``socket``, ``state`` (per-user activation and secrets), ``engine``,
    ``micromamba_path``, ``max_builds``, ``solve_ttl`` (seconds a solve stays cached),
    ``channel_alias``, ``watch_debounce_ms``, ``watch_step_ms``, ``gc_days``, ``cache_budget_bytes``,
    ``trusted_prefixes`` (a TOML list of directories, or ``:``-separated in the environment),
    ``log_file``, ``max_connections``, ``read_timeout``, ``keep_builds``, ``keep_solves``,
    ``keep_solves_days`` (what the registry keeps: retention.py), ``write_project_locks`` (true: a
    watched project without a conda-lock.yml gets one), and the engine's
    ``connect_timeout``, ``fetch_timeout`` and ``solve_timeout`` (seconds; see docs/configuration.md).
    In the TOML file the engine keys may also be written as an ``[engine]`` table
    (``engine.name``, ``engine.micromamba_path``). Paths are resolved by ``locations.Sources``.
    """
    sources = Sources(overrides, os.environ if environ is None else environ,
                      str(config_file) if config_file else None)
    pick = sources.pick
    paths = Paths(home=Path(sources.home()), socket=Path(sources.socket()), state=Path(sources.state()))
    values: dict[str, Any] = {}
    for key, convert in (("engine", str), ("micromamba_path", str), ("max_builds", int),
                         ("solve_ttl", float), ("channel_alias", str), ("watch_debounce_ms", int),
                         ("watch_step_ms", int), ("gc_days", float), ("cache_budget_bytes", int),
                         ("max_connections", int), ("read_timeout", float), ("keep_builds", int),
                         ("keep_solves", int), ("keep_solves_days", float), ("connect_timeout", float),
                         ("fetch_timeout", float), ("solve_timeout", float), ("write_project_locks", _flag)):
        choice = pick(key)
        if choice is None:
            continue
        raw, source = choice
        try:
            values[key] = convert(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r} ({source}): expected {convert.__name__}") from None
    choice = pick("trusted_prefixes")
    if choice is not None:
        values["trusted_prefixes"] = _prefixes(*choice)
    if values.get("engine", "auto") not in ENGINES:
        raise ConfigError(
            f"engine={values['engine']!r}: unknown engine", hint=f"choose one of: {', '.join(ENGINES)}"
        )
    if values.get("max_builds", 1) < 1:
        raise ConfigError(f"max_builds={values['max_builds']}: must be at least 1")
    if values.get("max_connections", 1) < 1:
        raise ConfigError(f"max_connections={values['max_connections']}: must be at least 1")
    if not 0 < values.get("read_timeout", 1) < float("inf"):
        raise ConfigError(f"read_timeout={values['read_timeout']}: must be a positive number of seconds")
    for key in ("keep_builds", "keep_solves", "keep_solves_days"):
        if not 0 <= values.get(key, 0) < float("inf"):
            raise ConfigError(f"{key}={values[key]}: must be a number, 0 or more")
    for key in ("read_timeout", "connect_timeout", "fetch_timeout", "solve_timeout"):
        if not 0 < values.get(key, 1) < float("inf"):
            raise ConfigError(f"{key}={values[key]}: must be a positive number of seconds")
    if not values.get("channel_alias", "/").endswith("/"):
        values["channel_alias"] += "/"
    log_file = sources.path("log_file")
    return Settings(paths=paths, config_file=Path(sources.file) if sources.from_file else None,
                    log_file=Path(log_file) if log_file else None, **values)


def _flag(raw: Any) -> bool:
    """A boolean setting: TOML true/false, or 1/0, true/false, yes/no, on/off in the environment."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_flag.__name__ = "true or false"


def _prefixes(raw: Any, source: str) -> tuple[str, ...]:
    """Trusted directory prefixes as real absolute paths (a symlinked prefix must match projects'
    real paths); ``raw`` is a list (TOML) or a ``:``-separated string (environment, flag)."""
    items = raw.split(os.pathsep) if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"trusted_prefixes={raw!r} ({source}): expected a list of directories")
    out = []
    for item in items:
        if not item.strip():
            continue
        path = os.path.expanduser(item.strip())
        if not os.path.isabs(path):
            raise ConfigError(f"trusted_prefixes: {item!r} ({source}) is not an absolute path")
        out.append(os.path.realpath(path))
    return tuple(out)
