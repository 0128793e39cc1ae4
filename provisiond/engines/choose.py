"""engine_for: the engine the settings ask for (rattler, micromamba, or auto)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from provisiond.config.settings import Settings
from provisiond.engines.base import Engine

log = logging.getLogger(__name__)


def engine_for(settings: Settings, environ: Mapping[str, str] | None = None) -> Engine:
    """The engine the settings ask for (``environ`` gives ``MAMBA_EXE`` and ``PATH``; default os.environ).

    ``rattler``: the embedded engine. ``micromamba``: the micromamba found through the
    ``micromamba_path`` setting, ``MAMBA_EXE`` or ``PATH``; missing or older than 2.0 is a
    ``ConfigError`` (exit 78), never a silent fallback. ``auto``: that micromamba when it is
    usable, else rattler; but a ``micromamba_path`` that is set must be usable in any case.
    """
    from provisiond.domain.errors import ConfigError

    environ = os.environ if environ is None else environ
    if settings.engine != "rattler":
        from provisiond.engines._micromamba_exe import find_micromamba
        from provisiond.engines.micromamba import MicromambaEngine

        exe = find_micromamba(settings, environ)
        if exe is None and settings.engine == "micromamba":
            raise ConfigError("engine=micromamba but no micromamba was found (micromamba_path, MAMBA_EXE, PATH)",
                              hint="install it (docs/micromamba.md) and set PROVISIOND_MICROMAMBA_PATH, "
                                   "or use --engine rattler")
        if exe is not None:
            try:
                return MicromambaEngine(settings, exe, environ=environ)
            except ConfigError as exc:
                if settings.engine == "micromamba" or settings.micromamba_path:
                    raise  # asked for by name: a start-up error, not a silent fallback
                log.warning("not using micromamba: %s; using the embedded rattler engine", exc.message)
    from provisiond.engines.rattler import RattlerEngine

    return RattlerEngine(settings, environ)
