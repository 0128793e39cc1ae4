"""SIGHUP: reopen the log file, re-read the settings and apply those that can change at run time.

``systemctl --user reload provisiond`` (``ExecReload=``) and logrotate's ``postrotate`` send it. A
config file that no longer loads is logged at ERROR and the daemon keeps its settings; a changed
setting that only a restart applies is named at WARNING and keeps its old value until then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from provisiond.config.settings import Settings
from provisiond.daemon.logfile import reopen_log_files
from provisiond.domain.errors import ConfigError

log = logging.getLogger(__name__)

# Opened once at start-up: the store, socket and state dirs, the engine (which resolves channel
# names with channel_alias and builds its HTTP clients with the timeouts) and the log file
# (SIGHUP reopens the same path).
NEEDS_RESTART = ("engine", "micromamba_path", "micromamba_install", "channel_alias", "connect_timeout", "fetch_timeout",
                 "solve_timeout", "log_file", "offline", "proxy_servers", "ssl_verify")


def _restart_only(settings: Settings) -> dict[str, Any]:
    paths = settings.paths
    return {"home": paths.home, "socket": paths.socket, "state": paths.state,
            **{key: getattr(settings, key) for key in NEEDS_RESTART}}


def reloaded(current: Settings, load: Callable[[], Settings]) -> Settings:
    """The settings to run with after SIGHUP: what ``load()`` reads, except what needs a restart."""
    try:
        new = load()
    except ConfigError as exc:
        log.error("reload failed, keeping the current settings: %s%s", exc.message,
                  f" (hint: {exc.hint})" if exc.hint else "")
        return current
    before, after = _restart_only(current), _restart_only(new)
    for key in before:
        if before[key] != after[key]:
            log.warning("reload: %s changed (%s -> %s); it needs a restart (systemctl --user restart "
                        "provisiond)", key, before[key], after[key])
    applied = dataclasses.replace(new, paths=current.paths,
                                  **{key: getattr(current, key) for key in NEEDS_RESTART})
    changes = [f"{field.name} {getattr(current, field.name)} -> {getattr(applied, field.name)}"
               for field in dataclasses.fields(Settings)
               if field.compare and getattr(current, field.name) != getattr(applied, field.name)]
    log.info("reloaded settings (%s): %s", applied.config_file or "no config file",
             ", ".join(changes) or "nothing changed")
    return applied


async def reload_on(hangup: asyncio.Event, settings: Settings, load: Callable[[], Settings],
                    apply: Callable[[Settings], None]) -> None:
    """Until cancelled: each time ``hangup`` is set (SIGHUP), reopen the log, reload, ``apply``."""
    while True:
        await hangup.wait()
        hangup.clear()
        reopen_log_files()
        settings = reloaded(settings, load)
        apply(settings)
