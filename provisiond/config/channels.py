"""A spec's channels as conda would use them: .condarc's ``channels`` added, names resolved.

The daemon solves ``effective_spec(spec, settings)``; the trust gate fingerprints the file as
written, so an edit of ``~/.condarc`` re-solves every env but blocks none.
"""

from __future__ import annotations

import dataclasses

from provisiond.config.settings import Settings
from provisiond.domain.spec import EnvSpec


def effective_spec(spec: EnvSpec, settings: Settings) -> EnvSpec:
    """``spec`` with the configured channels after its own (unless it says ``nodefaults``), as
    ``conda env create`` merges them; ``defaults`` expanded to ``default_channels`` and names in
    ``custom_channels`` to their server's URL; ``channel_priority: flexible`` (or ``disabled``) from
    the config applied. The same spec again gives the same answer (it is part of spec_key)."""
    channels = list(spec.channels)
    if not spec.nodefaults:
        channels += [c for c in settings.channels if c not in channels]
    channels = list(dict.fromkeys(resolved for c in channels for resolved in _resolve(c, settings)))
    priority = spec.channel_priority
    if settings.channel_priority in ("flexible", "disabled"):
        priority = "flexible"
    if channels == list(spec.channels) and priority == spec.channel_priority:
        return spec
    return dataclasses.replace(spec, channels=tuple(channels), channel_priority=priority)


def _resolve(channel: str, settings: Settings) -> list[str]:
    if channel == "defaults":
        # default_channels: conda's main and r unless configured; () means none (domain/channels.py)
        return [c for d in settings.default_channels for c in _resolve(d, settings)]
    if "://" in channel or channel.startswith(("/", ".", "~")):
        return [channel]
    custom = dict(settings.custom_channels)
    head = channel.split("/", 1)[0]
    if head in custom:
        return [f"{custom[head]}/{channel}"]
    return [channel]
