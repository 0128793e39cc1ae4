"""micromamba as a subprocess: argv building and running (its ``--json`` output is read in ``_micromamba_output.py``,
the executable found and probed in ``_micromamba_exe.py``).

Written against the researched contract (``shared/contract/README.md`` §2) and real 2.8.1
outputs (``samples/micromamba-real/``). The traps it avoids, all from §2 and §6:

- there is no ``--pkgs-dirs`` flag: the store's cache is given as ``CONDA_PKGS_DIRS``, which
  ``--no-env`` would silently disable, so inherited ``CONDA_*``/``MAMBA_*`` variables are
  scrubbed from the child's environment instead (an inherited ``CONDA_PREFIX`` is a target
  fallback) and ``--no-rc`` keeps ``~/.mambarc`` out;
- ``create -y`` deletes an existing env at the prefix, so ``install`` refuses a non-empty one;
- ``--json`` still prompts without ``-y`` on 2.8.1: always ``-y`` and stdin from /dev/null;
- ``--json`` lowers the log level to critical on 2.8.1, hiding the solver's explanation:
  ``--log-level error`` brings it back on stderr (on newer releases it is in ``log_history``).

micromamba cannot install into one directory for use at another, so it builds in place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import rattler

from provisiond.config.settings import Settings
from provisiond.domain.channels import with_defaults
from provisiond.domain.errors import ChannelTimeoutError, EngineError, SolveError
from provisiond.domain.events import BuildProgress
from provisiond.domain.lock import Lock
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import mask, strip_credentials
from provisiond.engines._micromamba_exe import micromamba_environ, probe_info, probe_version
from provisiond.engines._micromamba_output import (
    _build,
    _document,
    _failure,
    _problems,
    _virtual_of,
    clean_conda_meta,
    explicit_file,
    is_cached,
    is_unsolvable,
    linked_records,
    package_of,
)
from provisiond.engines._micromamba_request import (
    Pin,
    _name,
    _secrets,
    bracket_form,
    overlay_key,
    overlay_repodata,
    pins_to_overlay,
    priority_flag,
    reachable,
)
from provisiond.engines._process import ProcessResult, run_process
from provisiond.engines.base import OnLine
from provisiond.engines.virtual import VirtualPackages
from provisiond.store.credentials import Credentials
from provisiond.store.pkgcache import scrub_credentials, scrub_repodata_cache, share

log = logging.getLogger(__name__)

INSTALL_TIMEOUT = 3600.0
DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org/"
# libcurl's CURLE_OPERATION_TIMEDOUT (28), as libmamba 2.8.1 reports it on stderr.
_TIMED_OUT = ("Download error (28)", "Operation too slow", "Timeout was reached")


class MicromambaEngine:
    """Drives a micromamba 2.x executable; the root prefix and package cache live in the store."""

    name = "micromamba"
    builds_in_place = True

    def __init__(
        self,
        settings: Settings,
        exe: Path,
        *,
        environ: Mapping[str, str] | None = None,
        solve_timeout: float | None = None,
        install_timeout: float = INSTALL_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.exe = exe
        self.root = settings.paths.home / "mamba-root"
        self.solve_timeout = settings.solve_timeout if solve_timeout is None else solve_timeout
        self.install_timeout = install_timeout
        self._env = micromamba_environ(os.environ if environ is None else environ, self.root,
                                       settings.paths.pkgs, settings.connect_timeout)
        self._channel_config = rattler.ChannelConfig(channel_alias=settings.channel_alias)
        self.credentials = Credentials(settings.paths.credentials)
        self._version = probe_version(self.exe, self._env)
        info = probe_info(self.exe, self._env, self.root)
        self.platform = str(info.get("platform") or rattler.Subdir.current())
        # Detected again (another `info --json`) when a driver update or a glibc upgrade may have
        # changed them: engines/virtual.py.
        self._virtual = VirtualPackages(_virtual_of(info),
                                        lambda: _virtual_of(probe_info(self.exe, self._env, self.root)))
        self._linker: Any = None
        if settings.micromamba_install == "rattler":  # link with rattler's installer, in process
            from provisiond.engines.rattler import RattlerEngine

            self._linker = RattlerEngine(settings, environ)
            self._linker.credentials = self.credentials  # one map: what a solve remembers, an install uses
            self._linker._generation = -1  # its HTTP client is rebuilt with those on first use
            self.builds_in_place = False  # rattler installs elsewhere for use at the final path

    # -- the Engine protocol ------------------------------------------------------------------

    def version(self) -> str:
        return f"micromamba {self._version}"

    def virtual_packages(self) -> list[str]:
        return self._virtual.current()

    def channel_urls(self, spec: EnvSpec) -> list[str]:
        return [strip_credentials(url) for url in self.channels_of(spec)]

    def channels_of(self, spec: EnvSpec) -> list[str]:
        """Base URLs of the spec's channels in priority order, then those named only in ``channel::pkg``."""
        listed = with_defaults(spec.channels, spec.nodefaults, self.settings.default_channels)
        urls = [rattler.Channel(c, self._channel_config).base_url for c in listed]
        for dep in spec.dependencies:
            pinned = rattler.MatchSpec(dep, strict=False).channel
            if pinned is not None and pinned.base_url not in urls:
                urls.append(pinned.base_url)
        return urls

    def solve_argv(self, spec: EnvSpec, scratch: Path, *, refresh: bool, max_age: float = float("inf"),
                   overlays: Sequence[str] = (), pins: Sequence[Pin] = ()) -> list[str]:
        """``create --dry-run`` against a fresh scratch prefix, so the answer is the whole env.

        The specs, the priority and the channels are translated so that micromamba answers what
        rattler answers (``_micromamba_request``): ``overlays`` are the local channels of ``pins``.
        ``--repodata-ttl``: 0 re-fetches (``refresh``); N seconds trusts repodata cached for
        less than ``max_age``; absent, micromamba follows the server's cache headers (its 1).
        """
        argv = [str(self.exe), "create", "--dry-run", "--json", "-y", "--no-rc", "-r", str(self.root),
                "-p", str(scratch), "--override-channels"]
        for overlay in overlays:  # first: under strict priority they win for their pinned names only
            argv += ["-c", overlay]
        for channel in with_defaults(spec.channels, spec.nodefaults, self.settings.default_channels):
            # resolved like the rattler engine does, so both see one URL
            argv += ["-c", rattler.Channel(channel, self._channel_config).base_url.rstrip("/")]
        argv += ["--channel-priority", priority_flag(spec.channel_priority),
                 "--platform", self.platform, "--log-level", "error"]
        argv += self._common_flags()
        if self.settings.offline:  # the `offline` setting: cached repodata only
            argv += ["--offline"]
        elif refresh or max_age <= 0:
            argv += ["--repodata-ttl", "0"]
        elif max_age != float("inf"):
            argv += ["--repodata-ttl", str(max(2, int(max_age)))]  # 1 would mean "cache headers"
        overlaid = {p.name for p in pins}
        deps = [next(p.dep for p in pins if p.name == _name(dep)) if _name(dep) in overlaid else bracket_form(dep)
                for dep in spec.dependencies]
        return [*argv, *deps]

    def _common_flags(self) -> list[str]:
        flags = []
        if self.settings.channel_alias != DEFAULT_CHANNEL_ALIAS:  # for `channel::pkg` names
            flags += ["--channel-alias", self.settings.channel_alias]
        return flags

    def install_argv(self, explicit: Path, target_prefix: Path, *, offline: bool) -> list[str]:
        """``create`` from an @EXPLICIT file: no solver, exactly the lock's packages."""
        argv = [str(self.exe), "create", "--json", "-y", "--no-rc", "-r", str(self.root),
                "-p", str(target_prefix), "--file", str(explicit), "--log-level", "error"]
        return [*argv, "--offline"] if offline else argv

    async def solve(self, spec: EnvSpec, *, refresh: bool = False, max_age: float = float("inf")) -> Lock:
        channels = self.channels_of(spec)
        source = spec.source or "spec"
        if not channels:
            raise SolveError(f"{source}: no channels to solve from",
                             hint="add a 'channels:' list to the environment file")
        if not spec.dependencies:
            return Lock(platform=self.platform, packages=(), channels=tuple(channels), engine=self.name)
        scratch = self.root / "solve" / f"{os.getpid()}-{time.monotonic_ns()}"
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            log.debug("micromamba solve: %s", line)

        def timed_out(message: str) -> ChannelTimeoutError:
            return ChannelTimeoutError(
                f"{message}: a channel did not answer in time ({', '.join(mask(c) for c in channels)})",
                hint=f"check that the channel servers answer; raise solve_timeout (now {self.solve_timeout:g}s) "
                     "for a slow link, see docs/configuration.md")

        listed = with_defaults(spec.channels, spec.nodefaults, self.settings.default_channels)
        first = rattler.Channel(listed[0], self._channel_config).base_url if listed else ""
        pins = pins_to_overlay(spec, self._pinned(spec), first)
        overlays = await self._overlays(pins, on_line, timed_out, refresh=refresh) if pins else []
        argv = self.solve_argv(spec, scratch, refresh=refresh, max_age=max_age, overlays=overlays, pins=pins)
        try:
            result = await self._run(argv, "solve", on_line, self.solve_timeout, on_timeout=timed_out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # a dry run writes nothing there; be sure
        doc = _document(result)
        if is_unsolvable(doc, lines):
            raise SolveError(f"{source}: cannot be solved:\n" + "\n".join(_problems(doc, lines)),
                             hint="relax a version pin or add the channel that has the package")
        if result.returncode != 0 and any(m in line for line in lines for m in _TIMED_OUT):
            raise timed_out(_failure("solve", result, doc))
        if result.returncode != 0 or doc.get("success") is not True:
            raise EngineError(_failure("solve", result, doc), hint="check the channel URLs and your network")
        records = linked_records(doc)
        kept = reachable(records, [n for n in map(_name, spec.dependencies) if n])
        if len(kept) != len(records):  # e.g. a pip added to the request: rattler would not install it
            log.info("micromamba solve: dropped %s (nothing requested reaches them)",
                     ", ".join(sorted(str(r["name"]) for r in records if r not in kept)))
        doc = {"actions": {"LINK": kept}}
        packages = tuple(package_of(r) for r in linked_records(doc))
        # The store keeps the lock without tokens or passwords; install() puts them back.
        for base in {*channels, *(p.channel for p in packages)}:
            if "**" not in base:  # micromamba's JSON masks tokens (`/t/*****/`): never keep that as one
                self.credentials.remember(base)
        lock = Lock(platform=self.platform, packages=packages, channels=tuple(channels), engine=self.name)
        return lock.without_credentials()

    def _pinned(self, spec: EnvSpec) -> dict[str, str]:
        """Each ``channel::pkg`` dependency and its channel's base URL."""
        pinned = {}
        for dep in spec.dependencies:
            channel = rattler.MatchSpec(dep, strict=False).channel
            if channel is not None:
                pinned[dep] = channel.base_url
        return pinned

    async def _overlays(self, pins: Sequence[Pin], on_line: OnLine,
                        timed_out: Callable[[str], ChannelTimeoutError], *, refresh: bool) -> list[str]:
        """One local channel per pinned channel: its pinned names' records (``_micromamba_request``).

        Their repodata holds clean URLs (credentials stay in memory: a dry run downloads no package).
        """
        by_channel: dict[str, list[str]] = {}
        for pin in pins:
            by_channel.setdefault(strip_credentials(pin.channel), []).append(pin.name)
        urls = []
        for channel, names in by_channel.items():
            argv = [str(self.exe), "repoquery", "search", "--json", "--no-rc", "-r", str(self.root),
                    "--override-channels", "-c", self.credentials.attach(channel).rstrip("/"),
                    "--platform", self.platform, *self._common_flags(),
                    *(["--repodata-ttl", "0"] if refresh else []), *names]
            result = await self._run(argv, "repoquery", on_line, self.solve_timeout, on_timeout=timed_out)
            doc = _document(result)
            if result.returncode != 0 or not isinstance(doc.get("result"), dict):
                raise EngineError(_failure(f"repoquery of {', '.join(names)}", result, doc),
                                  hint="check the channel URLs and your network")
            records = [r for r in doc["result"].get("pkgs") or () if isinstance(r, dict) and r.get("name") in names]
            documents = {subdir: overlay_repodata(records, subdir, channel) for subdir in (self.platform, "noarch")}
            folder = self.root / "pins" / overlay_key([p for p in pins if p.name in names], documents)
            for subdir, document in documents.items():
                target = folder / subdir / "repodata.json"
                if not target.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(document, sort_keys=True))
                    os.replace(tmp, target)
            urls.append(folder.as_uri())
        return urls

    async def install(self, lock: Lock, build_dir: Path, target_prefix: Path, on_line: OnLine,
                      progress: BuildProgress | None = None) -> None:
        if self._linker is not None:  # micromamba_install = "rattler": no second micromamba process
            on_line("linking with rattler's installer (micromamba_install = rattler)")
            await self._linker.install(lock, build_dir, target_prefix, on_line, progress)
            return
        if target_prefix.exists() and any(target_prefix.iterdir()):
            # `create -y` would delete whatever is there (contract §2.2): never let it.
            raise EngineError(f"{target_prefix} already exists and is not empty; micromamba would replace it",
                              hint="remove it if no env is published there, or restart provisiond to sweep it")
        if not lock.packages:  # nothing to link; an explicit file without URLs is an error for micromamba
            (target_prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
            (target_prefix / "conda-meta" / "history").touch()
            on_line(f"created empty env {target_prefix}")
            return
        explicit = build_dir / "explicit.txt"
        # Whole URLs with their credentials, for micromamba: the file is 0600 (umask) and goes with build_dir.
        urls = [self.credentials.attach(p.url) for p in lock.packages]
        explicit.write_text(explicit_file(lock, self.credentials.attach))
        pkgs = self.settings.paths.pkgs
        # What rattler extracted is hardlinked where micromamba looks: no second download.
        if shared := await asyncio.to_thread(share, pkgs, lock.packages, "micromamba"):
            on_line(f"linked {len(shared)} packages from rattler's cache layout: {', '.join(shared)}")
        offline = all(is_cached(pkgs, p) for p in lock.packages)
        argv = self.install_argv(explicit, target_prefix, offline=offline)
        on_line(f"installing {len(lock.packages)} packages into {target_prefix} (in place"
                f"{', offline: all cached' if offline else ''})")
        on_line("$ " + shlex.join(argv))
        if progress:  # micromamba reports nothing while it runs: one event before, one after
            progress.emit("link", done=0, total=len(lock.packages))
        result = await self._run(argv, "install", on_line, self.install_timeout, urls=urls)
        doc = _document(result)
        if result.returncode != 0 or doc.get("success") is not True:
            raise EngineError(_failure(f"install into {target_prefix}", result, doc))
        if any(strip_credentials(u) != u for u in urls):  # credentials: out of the store
            scrub_credentials(pkgs, lock.packages)  # the token it wrote into its cache records
            clean_conda_meta(target_prefix)  # micromamba writes the token (or `/t/*****/`); rattler clean URLs
        for record in linked_records(doc):
            on_line(f"linked {record.get('name')}-{record.get('version')}-{_build(record)} ({record.get('subdir')})")
        if progress:
            progress.emit("link", done=len(lock.packages), total=len(lock.packages))

    async def _run(self, argv: list[str], step: str, on_line: OnLine, timeout: float,
                   on_timeout: Callable[[str], ChannelTimeoutError] | None = None,
                   urls: Sequence[str] = ()) -> ProcessResult:
        """Run micromamba; then take the credentials of ``argv`` and ``urls`` out of its repodata cache."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings.paths.pkgs.mkdir(parents=True, exist_ok=True)
        try:
            return await run_process(argv, on_line=on_line, timeout=timeout, env=self._env,
                                     step=f"micromamba {step}", capture_stdout=True, on_timeout=on_timeout)
        finally:
            if secrets := _secrets([*argv, *urls]):
                scrub_repodata_cache(self.settings.paths.pkgs, secrets)
