"""Engines turn an EnvSpec into a Lock (solve) and a Lock into a prefix (install)."""

from __future__ import annotations

from provisiond.engines.base import Engine
from provisiond.settings import Settings


def engine_for(settings: Settings) -> Engine:
    """The engine the settings ask for; ``auto`` is the embedded rattler engine until micromamba lands."""
    from provisiond.errors import ConfigError

    if settings.engine == "micromamba":
        raise ConfigError("the micromamba engine is not available in this version",
                          hint="use --engine rattler (the embedded default)")
    from provisiond.engines.rattler import RattlerEngine

    return RattlerEngine(settings)
