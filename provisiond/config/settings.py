"""Settings and the paths derived from them, loaded once by each ``main()``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisiond.config import layout
from provisiond.config.locations import Sources
from provisiond.domain.channels import DEFAULT_CHANNELS
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
    # Who links a micromamba-solved env: rattler's installer in process (the default: one micromamba
    # process per new env, within 1.2x of a raw `micromamba create`) or micromamba itself (an
    # @EXPLICIT install, in place: a second process). docs/micromamba.md.
    micromamba_install: str = "rattler"
    max_builds: int = 2
    solve_ttl: float = 3600.0
    channel_alias: str = "https://conda.anaconda.org/"
    # What `defaults` in channels: means, and the channels of a file without `channels:` (conda's
    # main and r). Empty: such a file is an error in `check` and cannot be solved.
    default_channels: tuple[str, ...] = DEFAULT_CHANNELS
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
    # Activation puts "(name) " before the shell's prompt, as conda's changeps1 (restored on leave).
    changeps1: bool = True
    # A watched project without a conda-lock.yml gets one written beside its environment file
    # (docs/lockfiles.md); a project that has one always keeps it current.
    write_project_locks: bool = False
    config_file: Path | None = None
    # Jupyter kernelspecs for ready envs holding ipykernel (daemon/kernels.py), written into
    # jupyter_data_dir/kernels; None (Settings built by hand, as in tests) writes none.
    kernels: bool = True
    jupyter_data_dir: Path | None = None
    # The OSV database `provisionctl audit` and GET /v1/audit match envs against: a directory or a
    # zip of OSV JSON records (daemon/audit.py); None: only --db.
    audit_db: Path | None = None
    # OCI registries (docs/registry.md): the docker-style auth file with the logins (None: docker's,
    # podman's, then ~/.docker/config.json), hosts reached over plain HTTP, and channel mirrors
    # (channel base URL -> oci://HOST/REPO in conda-forge's layout).
    registry_auth_file: Path | None = None
    insecure_registries: tuple[str, ...] = ()
    mirrors: tuple[tuple[str, str], ...] = ()
    # None: log to stderr (the journal under systemd). A file is reopened on SIGHUP (logrotate).
    log_file: Path | None = None
    # conda's keys, from .condarc unless set here (config/condarc.py, docs/configuration.md):
    # channels added after a spec's own unless it says nodefaults; what `defaults` stands for;
    # channel name -> server; strict/flexible/disabled for specs that do not say.
    channels: tuple[str, ...] = ()
    custom_channels: tuple[tuple[str, str], ...] = ()
    channel_priority: str | None = None
    # Other tools' package caches, read (hardlinked from) before a download, never written.
    pkgs_dirs: tuple[str, ...] = ()
    ssl_verify: str = "true"  # "true", "false" or a CA bundle file
    proxy_servers: tuple[tuple[str, str], ...] = ()  # scheme -> proxy URL
    offline: bool = False  # solve from cached repodata only, install from cached packages only
    conda_config: bool = True  # read .condarc and CONDA_* at all
    # conda's list of envs: ready named envs are added and removed; None = leave it alone.
    environments_txt: Path | None = None
    # key -> where its value came from ("flag", "env", a file); keys at their default are absent.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_wire(self) -> dict[str, Any]:
        """The settings in effect, as ``/v1/status`` shows them (after a SIGHUP reload, the new ones)."""
        from provisiond.domain.urls import mask

        return {"home": str(self.paths.home), "socket": str(self.paths.socket), "state": str(self.paths.state),
                "engine": self.engine, "max_builds": self.max_builds, "solve_ttl": self.solve_ttl,
                "channel_alias": mask(self.channel_alias), "watch_debounce_ms": self.watch_debounce_ms,
                "watch_step_ms": self.watch_step_ms, "gc_days": self.gc_days,
                "cache_budget_bytes": self.cache_budget_bytes, "trusted_prefixes": list(self.trusted_prefixes),
                "keep_builds": self.keep_builds, "keep_solves": self.keep_solves,
                "keep_solves_days": self.keep_solves_days,
                "connect_timeout": self.connect_timeout, "fetch_timeout": self.fetch_timeout,
                "solve_timeout": self.solve_timeout, "changeps1": self.changeps1,
                "write_project_locks": self.write_project_locks,
                "config_file": str(self.config_file) if self.config_file else None,
                "log_file": str(self.log_file) if self.log_file else None,
                "channels": [mask(c) for c in self.channels],
                "default_channels": [mask(c) for c in self.default_channels],
                "custom_channels": {k: mask(v) for k, v in self.custom_channels},
                "channel_priority": self.channel_priority, "pkgs_dirs": list(self.pkgs_dirs),
                "ssl_verify": self.ssl_verify, "proxy_servers": {k: mask(v) for k, v in self.proxy_servers},
                "offline": self.offline, "conda_config": self.conda_config,
                "environments_txt": str(self.environments_txt) if self.environments_txt else None,
                "kernels": self.kernels,
                "jupyter_data_dir": str(self.jupyter_data_dir) if self.jupyter_data_dir else None,
                "audit_db": str(self.audit_db) if self.audit_db else None,
                "sources": dict(self.sources),
                "registry_auth_file": str(self.registry_auth_file) if self.registry_auth_file else None,
                "insecure_registries": list(self.insecure_registries),
                "mirrors": {channel: mask(repo) for channel, repo in self.mirrors}}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    *,
    conda_layer: Callable[[Mapping[str, str]], Mapping[str, tuple[Any, str]]] | None = None,
) -> Settings:
    """Build Settings. Precedence: CLI flag (``overrides``) > ``PROVISIOND_*`` env > TOML file > default.

    Keys: ``home``, ``socket``, ``state`` (per-user activation and secrets), ``engine``,
    ``micromamba_path``, ``micromamba_install``, ``max_builds``, ``solve_ttl`` (seconds a solve stays cached),
    ``channel_alias``, ``default_channels`` (what ``defaults`` means: a TOML list of URLs or names, or
    comma-separated in the environment; an empty list for none),
    ``watch_debounce_ms``, ``watch_step_ms``, ``gc_days``, ``cache_budget_bytes``,
    ``trusted_prefixes`` (a TOML list of directories, or ``:``-separated in the environment),
    ``log_file``, ``max_connections``, ``read_timeout``, ``keep_builds``, ``keep_solves``,
    ``keep_solves_days`` (what the registry keeps: retention.py), ``changeps1`` (the prompt),
    ``write_project_locks`` (true: a watched project without a conda-lock.yml gets one), and the engine's
    ``connect_timeout``, ``fetch_timeout`` and ``solve_timeout`` (seconds; see docs/configuration.md);
    ``kernels`` (write Jupyter kernelspecs, default true), ``jupyter_data_dir`` (where: else found as
    jupyter_core finds it) and ``audit_db`` (the OSV database of ``provisionctl audit``).
    In the TOML file the engine keys may also be written as an ``[engine]`` table
    (``engine.name``, ``engine.micromamba_path``). Paths are resolved by ``locations.Sources``.

    conda's keys (``channels``, ``channel_alias``, ``default_channels``, ``custom_channels``,
    ``channel_priority``, ``pkgs_dirs``, ``ssl_verify``, ``proxy_servers``, ``offline``) have one more
    layer between the TOML file and the default: conda's own ``.condarc`` files and ``CONDA_*``
    variables, read by ``conda_layer`` (the daemon passes ``condarc.layer``; provisionctl, which
    needs only the paths, passes nothing and pays for no YAML parser), unless ``conda_config`` is
    false. ``environments_txt`` is true
    (``~/.conda/environments.txt``), false, or a file. ``Settings.sources`` says where each came from.
    """
    environ = os.environ if environ is None else environ
    sources = Sources(overrides, environ, str(config_file) if config_file else None)
    conda_choice = sources.pick("conda_config")
    conda_config = _bool(*conda_choice) if conda_choice else True
    conda = conda_layer(environ) if conda_config and conda_layer is not None else {}
    origin: dict[str, str] = {}

    def pick(key: str) -> tuple[Any, str] | None:
        choice = sources.pick(key) or conda.get(key)
        if choice is not None:
            origin[key] = choice[1]
        return choice

    paths = Paths(home=Path(sources.home()), socket=Path(sources.socket()), state=Path(sources.state()))
    values: dict[str, Any] = {}
    for key, convert in (("engine", str), ("micromamba_path", str), ("micromamba_install", str), ("max_builds", int),
                         ("solve_ttl", float), ("channel_alias", str), ("watch_debounce_ms", int),
                         ("watch_step_ms", int), ("gc_days", float), ("cache_budget_bytes", int),
                         ("max_connections", int), ("read_timeout", float), ("keep_builds", int),
                         ("keep_solves", int), ("keep_solves_days", float), ("connect_timeout", float),
                         ("fetch_timeout", float), ("solve_timeout", float), ("changeps1", _truth),
                         ("write_project_locks", _truth)):
        choice = pick(key)
        if choice is None:
            continue
        raw, source = choice
        try:
            values[key] = convert(raw)
        except (TypeError, ValueError):
            what = "true or false" if convert is _truth else convert.__name__
            raise ConfigError(f"{key}={raw!r} ({source}): expected {what}") from None
    choice = pick("trusted_prefixes")
    if choice is not None:
        values["trusted_prefixes"] = _prefixes(*choice)
    choice = pick("default_channels")
    if choice is not None:
        values["default_channels"] = _channel_list(*choice)
    if values.get("engine", "auto") not in ENGINES:
        raise ConfigError(
            f"engine={values['engine']!r}: unknown engine", hint=f"choose one of: {', '.join(ENGINES)}"
        )
    if values.get("micromamba_install", "rattler") not in ("micromamba", "rattler"):
        raise ConfigError(f"micromamba_install={values['micromamba_install']!r}: unknown installer",
                          hint="choose micromamba or rattler")
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
    values.update(_conda_values(pick, environ))
    for key in ("home", "socket", "state", "log_file", "conda_config"):
        choice = sources.pick(key)
        if choice is not None:
            origin[key] = choice[1]
    choice = pick("insecure_registries")
    if choice is not None:
        raw, source = choice
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"insecure_registries={raw!r} ({source}): expected a list of HOST[:PORT]")
        values["insecure_registries"] = tuple(i.strip().lower() for i in items if i.strip())
    choice = pick("mirrors")
    if choice is not None:
        values["mirrors"] = _mirrors(*choice)
    choice = pick("kernels")
    if choice is not None:
        values["kernels"] = _bool(*choice, key="kernels")
    log_file, audit_db = sources.path("log_file"), sources.path("audit_db")
    auth_file = sources.path("registry_auth_file")
    return Settings(paths=paths, config_file=Path(sources.file) if sources.from_file else None,
                    log_file=Path(log_file) if log_file else None, conda_config=conda_config,
                    registry_auth_file=Path(auth_file) if auth_file else None,
                    jupyter_data_dir=Path(jupyter_data_dir(sources)), audit_db=Path(audit_db) if audit_db else None,
                    sources=origin, **values)


def jupyter_data_dir(sources: Sources) -> str:
    """The user's Jupyter data dir, as jupyter_core finds it: the ``jupyter_data_dir`` setting, else
    ``JUPYTER_DATA_DIR``, else ``~/Library/Jupyter`` on macOS, else ``$XDG_DATA_HOME/jupyter``
    (``~/.local/share/jupyter``)."""
    configured = sources.path("jupyter_data_dir")
    if configured:
        return configured
    environ = sources.environ
    if environ.get("JUPYTER_DATA_DIR"):
        return os.path.abspath(os.path.expanduser(environ["JUPYTER_DATA_DIR"]))
    home = environ.get("HOME") or os.path.expanduser("~")
    if sys.platform == "darwin" and not environ.get("JUPYTER_PLATFORM_DIRS"):
        return os.path.join(home, "Library", "Jupyter")
    return os.path.join(environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "jupyter")


_PRIORITIES = ("strict", "flexible", "disabled")


def _conda_values(pick: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    """conda's keys, checked: lists as tuples, maps as sorted pairs (Settings stays comparable)."""
    values: dict[str, Any] = {}
    for key in ("channels", "pkgs_dirs"):  # default_channels: _channel_list
        choice = pick(key)
        if choice is not None:
            raw, source = choice
            items = [v.strip() for v in raw.split(",")] if isinstance(raw, str) else raw
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ConfigError(f"{key}={raw!r} ({source}): expected a list of strings")
            items = [i.rstrip("/") or i for i in items if i]
            if key == "pkgs_dirs":
                home = environ.get("HOME") or os.path.expanduser("~")
                items = [os.path.abspath(home + i[1:] if i.startswith("~") else os.path.expandvars(i))
                         for i in items]
            values[key] = tuple(dict.fromkeys(items))
    for key in ("custom_channels", "proxy_servers"):
        choice = pick(key)
        if choice is not None:
            raw, source = choice
            if not isinstance(raw, Mapping) or not all(isinstance(v, str) for v in raw.values()):
                raise ConfigError(f"{key}={raw!r} ({source}): expected a table of names and URLs",
                                  hint=f'in config.toml: [{key}] then lines like name = "https://..."')
            values[key] = tuple(sorted((str(k), v.rstrip("/")) for k, v in raw.items()))
    choice = pick("channel_priority")
    if choice is not None:
        if choice[0] not in _PRIORITIES:
            raise ConfigError(f"channel_priority={choice[0]!r} ({choice[1]}): unknown",
                              hint=f"choose one of: {', '.join(_PRIORITIES)}")
        values["channel_priority"] = choice[0]
    choice = pick("ssl_verify")
    if choice is not None:
        raw, source = choice
        text = str(raw).lower() if isinstance(raw, bool) or str(raw).lower() in ("true", "false") else str(raw)
        if text not in ("true", "false") and not os.path.isfile(os.path.expanduser(text)):
            raise ConfigError(f"ssl_verify={raw!r} ({source}): neither true, false nor a CA bundle file")
        values["ssl_verify"] = text if text in ("true", "false") else os.path.abspath(os.path.expanduser(text))
    choice = pick("offline")
    if choice is not None:
        values["offline"] = _bool(*choice)
    choice = pick("environments_txt")
    enabled, source = (True, "default") if choice is None else choice
    if isinstance(enabled, str) and enabled.lower() in ("true", "false", "1", "0", "yes", "no", ""):
        enabled = _bool(enabled, source)
    if enabled is True:
        home = environ.get("HOME") or os.path.expanduser("~")
        values["environments_txt"] = Path(home, ".conda", "environments.txt")
    elif isinstance(enabled, str):
        values["environments_txt"] = Path(os.path.abspath(os.path.expanduser(enabled)))
    elif enabled is not False:
        raise ConfigError(f"environments_txt={enabled!r} ({source}): expected true, false or a file")
    return values


def _bool(raw: Any, source: str, key: str = "") -> bool:
    try:
        return _truth(raw)
    except ValueError:
        raise ConfigError(f"{key + '=' if key else ''}{raw!r} ({source}): expected true or false") from None


def _truth(raw: Any) -> bool:
    """A TOML boolean, or true/false, yes/no, on/off, 1/0 (or empty) from the environment or a flag."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


def _mirrors(raw: Any, source: str) -> tuple[tuple[str, str], ...]:
    """Channel -> OCI mirror: a TOML table, or ``CHANNEL=oci://HOST/REPO`` pairs separated by spaces."""
    if isinstance(raw, str):
        pairs = [item.split("=", 1) for item in raw.split() if item]
        if not all(len(p) == 2 for p in pairs):
            raise ConfigError(f"mirrors={raw!r} ({source}): expected CHANNEL=oci://HOST/REPO pairs")
        raw = dict(pairs)
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ConfigError(f"mirrors ({source}): expected a table of channel URL = \"oci://HOST/REPO\"")
    out = []
    for channel, mirror in raw.items():
        if not mirror.startswith("oci://"):
            raise ConfigError(f"mirrors: {channel} = {mirror!r} ({source}): a mirror is an oci://HOST/REPO URL",
                              hint="e.g. oci://ghcr.io/channel-mirrors/conda-forge")
        out.append((channel.rstrip("/") + "/", mirror.rstrip("/")))
    return tuple(out)


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


def _channel_list(raw: Any, source: str) -> tuple[str, ...]:
    """``default_channels``: a list (TOML) or a comma-separated string (environment, flag)."""
    items = [i for i in raw.replace(",", " ").split()] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"default_channels={raw!r} ({source}): expected a list of channel URLs or names")
    out = tuple(dict.fromkeys(i.strip().rstrip("/") for i in items if i.strip()))
    if "defaults" in out:
        raise ConfigError(f"default_channels ({source}): cannot contain 'defaults' itself")
    return out
