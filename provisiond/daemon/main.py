"""provisiond: settings, logging, the store flock, the API on its socket, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from provisiond import __version__
from provisiond.config import condarc
from provisiond.config.settings import Settings, load_settings
from provisiond.domain.errors import ProvisionError

log = logging.getLogger("provisiond")


async def serve(settings: Settings, *, environ: Mapping[str, str] | None = None,
                load: Callable[[], Settings] | None = None) -> None:
    """Run until SIGTERM/SIGINT: open the store (one daemon per store), serve the API, shut down cleanly.

    SIGHUP reopens the log file and applies ``load()``'s settings (default: the environment and
    config file again; ``main`` passes its flags too). Under systemd it takes the socket from
    LISTEN_FDS and reports READY=1/STOPPING=1 (sd_notify).
    """
    from provisiond.daemon import systemd
    from provisiond.daemon.api.app import make_app, serving
    from provisiond.daemon.provisioner import Provisioner
    from provisiond.daemon.reload import reload_on
    from provisiond.daemon.watcher import ProjectWatcher, prepare
    from provisiond.engines.choose import engine_for
    from provisiond.store import conda_envs, retention
    from provisiond.store.store import Store

    environ = os.environ if environ is None else environ
    inherited = systemd.listen_socket(environ)
    if inherited is not None and (warning := systemd.check_inherited(inherited, settings.paths.socket)):
        log.warning("%s", warning)
    loop = asyncio.get_running_loop()
    stop, hangup = asyncio.Event(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Set as soon as the loop runs: a SIGHUP during start-up is applied once serving, never fatal.
    loop.add_signal_handler(signal.SIGHUP, hangup.set)
    try:
        with Store.open(settings.paths) as store:
            retention.prune(store, settings, orphan_logs=True)
            conda_envs.sync(settings, store.list_names())  # names removed or gone while we were down
            engine = engine_for(settings, environ)
            provisioner = Provisioner(store, engine, settings)
            provisioner.lifecycle.kernels.sync()  # names removed, envs rebuilt or settings changed while down
            info = {"version": __version__, "engine": engine.name, "engine_version": engine.version(),
                    "platform": engine.platform, "store": str(settings.paths.home),
                    "socket": str(settings.paths.socket)}
            try:
                await prepare()  # before the socket: the first requests must not wait for an import
                async with serving(make_app(provisioner, info), settings.paths.socket, inherited):
                    log.info("provisiond %s listening on %s (store %s, engine %s)", __version__,
                             settings.paths.socket, settings.paths.home, info["engine_version"])
                    if settings.offline:
                        log.info("offline (%s): solving from cached repodata, installing cached packages only",
                                 settings.sources.get("offline", "config"))
                    systemd.notify(f"READY=1\nSTATUS=serving {settings.paths.home}", environ)
                    watcher = ProjectWatcher(provisioner, debounce_ms=settings.watch_debounce_ms,
                                             step_ms=settings.watch_step_ms)

                    def apply(new: Settings) -> None:  # SIGHUP: see reload.py
                        provisioner.apply(new)
                        watcher.apply(new)

                    # A crash in the watcher ends the group and the daemon exits non-zero
                    # (systemd's Restart=on-failure brings it back).
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(watcher.run(stop))
                        tg.create_task(provisioner.auditor.watch(stop))  # re-audits when the OSV db changes
                        reload = load or (lambda: load_settings(environ=environ, conda_layer=condarc.layer))
                        reloads = tg.create_task(reload_on(hangup, settings, reload, apply))
                        # Files may have changed while we were down: check every project,
                        # yielding to requests between them.
                        tg.create_task(provisioner.check_projects())
                        await stop.wait()
                        reloads.cancel()
                    log.info("shutting down")
                    systemd.notify("STOPPING=1", environ)
                    # Cancel builds now: requests waiting on them end at once, instead of holding
                    # the server's shutdown until each build finishes.
                    await provisioner.close()
            finally:
                await provisioner.close()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def network_environ(settings: Settings, environ: dict[str, str] | os._Environ[str]) -> None:
    """conda's ``proxy_servers`` and ``ssl_verify`` as the variables rattler's HTTP client and
    micromamba read (``HTTPS_PROXY``, ``SSL_CERT_FILE``...), set before the engine starts."""
    for scheme, url in settings.proxy_servers:
        if scheme in ("http", "https", "all", "no"):
            environ[f"{scheme}_proxy"] = environ[f"{scheme.upper()}_PROXY"] = url
    if settings.ssl_verify not in ("true", "false"):
        environ["SSL_CERT_FILE"] = environ["REQUESTS_CA_BUNDLE"] = settings.ssl_verify
    elif settings.ssl_verify == "false":
        log.warning("ssl_verify is false (%s), but provisiond always verifies certificates: "
                    "give a CA bundle file instead", settings.sources.get("ssl_verify", "config"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="provisiond",
        description="Per-user daemon that builds conda environments from environment.yml into a "
                    "content-addressed store and serves them on a Unix socket.",
        epilog="Settings precedence: flag > PROVISIOND_* environment > config file > default. "
               "See docs/configuration.md.",
    )
    p.add_argument("--home", help="store root (env PROVISIOND_HOME)")
    p.add_argument("--socket", help="Unix socket path (env PROVISIOND_SOCKET)")
    p.add_argument("--engine", choices=("auto", "rattler", "micromamba"), help="engine (env PROVISIOND_ENGINE)")
    p.add_argument("--max-builds", type=int, help="builds allowed at once")
    p.add_argument("--offline", action="store_true", default=None,
                   help="solve from cached repodata and install from cached packages only (config: offline)")
    p.add_argument("--log-file", help="log to this file instead of stderr; SIGHUP reopens it "
                                      "(env PROVISIOND_LOG_FILE)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: engine output)")
    p.add_argument("--version", action="version", version=f"provisiond {__version__}")
    return p


class _MaskCredentials(logging.Filter):
    """Channel URLs may carry tokens or passwords: mask them in every log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from provisiond.domain.urls import mask

        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s" if "JOURNAL_STREAM" in os.environ else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_MaskCredentials())
    if verbose < 2:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Everything the daemon creates is for this user only: the store holds channel URLs, logs and
    # the registry, the state dir values from .env (docs/store.md, "Who can read the store").
    os.umask(0o077)
    configure_logging(args.verbose)
    overrides = {"home": args.home, "socket": args.socket, "engine": args.engine,
                 "max_builds": args.max_builds, "log_file": args.log_file, "offline": args.offline}
    try:
        settings = load_settings(overrides, conda_layer=condarc.layer)
        network_environ(settings, os.environ)
        if settings.log_file:
            from provisiond.daemon.logfile import log_to_file

            log_to_file(settings.log_file, [_MaskCredentials()])
        asyncio.run(serve(settings, load=lambda: load_settings(overrides, conda_layer=condarc.layer)))
    except ProvisionError as exc:
        log.error("%s%s", exc.message, f"\nhint: {exc.hint}" if exc.hint else "")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def run() -> None:
    """Console entry point: rattler can crash at interpreter exit, so leave through os._exit."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
