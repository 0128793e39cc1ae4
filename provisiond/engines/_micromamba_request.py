"""What micromamba is asked, so that it answers what the rattler engine answers (pure).

micromamba 2.x differs from rattler on the same file in three ways (docs/micromamba.md):

- **Forced pip.** Since 2.6, ``create`` adds ``pip`` to a request when a spec string starts with
  ``python`` (``python``, ``python=3.12``, ``python >=3``); ``add_pip_as_python_dependency: false``
  does not stop it. The same spec in bracket form (``python[version='3.12.*']``) is not matched.
  Every spec is therefore handed over as rattler parsed it, in bracket form; this also gives
  ``name=1.0=build`` rattler's meaning (exactly 1.0; libmamba reads it as "starts with 1.0").
  Records that nothing requested reaches are dropped afterwards (``reachable``), so a pip a later
  release adds some other way never reaches a lock.
- **Flexible priority.** ``--channel-priority flexible`` still prefers the first channel that has a
  package; rattler's flexible (its ``Disabled``) takes the best version across channels, which is
  micromamba's ``disabled``.
- **``channel::pkg`` under strict.** libsolv excludes a pinned package when a higher-priority channel
  also has the name. rattler takes it from the named channel, with strict priority for every other
  name. micromamba gets the same: the pinned name's records from its channel go into a small local
  channel placed first (``pin_overlays``), whose records point at the real channel (CEP 15
  ``base_url``), and the spec loses its ``channel::``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rattler

from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import strip_credentials

__all__ = ["Pin", "bracket_form", "overlay_repodata", "pins_to_overlay", "priority_flag", "reachable"]


_UNMAPPED = re.compile(r"\[.*\b(?!(?:version|build|build_number|subdir|md5|sha256)\b)\w+\s*=")


def priority_flag(channel_priority: str) -> str:
    """micromamba's ``--channel-priority`` value with rattler's meaning of ours."""
    return "strict" if channel_priority == "strict" else "disabled"


def bracket_form(dep: str, *, keep_channel: bool = True) -> str:
    """``dep`` as rattler parses it, written ``[channel::]name[version='..',build='..']``.

    A spec with parts micromamba's brackets cannot say (extras, conditions, a URL) is left as it is.
    """
    if _UNMAPPED.search(dep):  # a bracket key this function does not carry over: as it is
        return dep
    spec = rattler.MatchSpec(dep, strict=False)
    if spec.name is None or spec.extras or spec.condition is not None or spec.file_name or spec.namespace:
        return dep
    name = spec.name.normalized
    attrs: list[tuple[str, str]] = []
    if spec.version is not None:
        attrs.append(("version", str(spec.version)))
    if spec.build is not None:
        attrs.append(("build", str(spec.build)))
    if spec.build_number is not None:
        attrs.append(("build_number", str(spec.build_number).removeprefix("==")))
    for key in ("subdir", "md5", "sha256"):
        if (value := getattr(spec, key)) is not None:
            attrs.append((key, str(value)))
    if any("'" in value for _, value in attrs):
        return dep
    prefix = f"{spec.channel.base_url.rstrip('/')}::" if keep_channel and spec.channel is not None else ""
    if not attrs and name != "python":
        return prefix + name
    return prefix + name + "[" + ",".join(f"{k}='{v}'" for k, v in attrs) + "]"  # `python[]`: no pip


@dataclass(frozen=True)
class Pin:
    """A ``channel::name`` spec that micromamba's strict priority would exclude."""

    name: str
    channel: str  # base URL with a trailing slash
    dep: str  # the spec, without its channel, in bracket form


def pins_to_overlay(spec: EnvSpec, pinned: Mapping[str, str], first: str) -> list[Pin]:
    """Under strict priority, the ``channel::pkg`` pins to any channel but the first (``first``).

    ``pinned`` maps each pinned dependency string to its channel's base URL.
    """
    if spec.channel_priority != "strict":
        return []
    pins = []
    for dep in spec.dependencies:
        channel = pinned.get(dep)
        name = rattler.MatchSpec(dep, strict=False).name
        if channel is None or channel == first or name is None:
            continue
        pins.append(Pin(name.normalized, channel, bracket_form(dep, keep_channel=False)))
    return pins


def overlay_repodata(records: Iterable[Mapping[str, Any]], subdir: str, base_url: str) -> dict[str, Any]:
    """A repodata.json (CEP 15) of ``records`` (``repoquery --json`` output) whose files live at ``base_url``."""
    packages: dict[str, Any] = {}
    conda: dict[str, Any] = {}
    for record in records:
        if record.get("subdir") != subdir:
            continue
        file_name = str(record.get("fn") or str(record["url"]).rsplit("/", 1)[-1])
        entry = {k: v for k, v in record.items()
                 if k not in ("fn", "url", "channel", "build_string", "track_features", "signatures") and v is not None}
        entry["build"] = str(record.get("build_string") or record.get("build") or "")
        if record.get("track_features"):
            entry["track_features"] = record["track_features"]
        stamp = int(record.get("timestamp") or 0)
        if stamp:
            entry["timestamp"] = stamp * 1000 if stamp < 100_000_000_000 else stamp
        (conda if file_name.endswith(".conda") else packages)[file_name] = entry
    return {"info": {"subdir": subdir, "base_url": base_url.rstrip("/") + f"/{subdir}/"}, "repodata_version": 2,
            "packages": packages, "packages.conda": conda}


def overlay_key(pins: Sequence[Pin], documents: Mapping[str, Any]) -> str:
    """A stable folder name for an overlay's content (its repodata is cached by URL)."""
    text = json.dumps([[p.name, p.channel] for p in pins] + [documents], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reachable(records: Sequence[Mapping[str, Any]], requested: Iterable[str]) -> list[Mapping[str, Any]]:
    """The records the requested names reach through ``depends``; what nothing reaches is dropped."""
    by_name = {str(r["name"]): r for r in records}
    todo = [n for n in requested if n in by_name]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for dep in by_name[name].get("depends") or ():
            dep_name = str(dep).split()[0].split("[")[0]
            for cut in ("=", "<", ">", "!", "~"):
                dep_name = dep_name.split(cut)[0]
            if dep_name in by_name and dep_name not in seen:
                todo.append(dep_name)
    return [r for r in records if str(r["name"]) in seen]


def _name(dep: str) -> str:
    name = rattler.MatchSpec(dep, strict=False).name
    return name.normalized if name is not None else ""


def _secrets(texts: Sequence[str]) -> list[str]:
    """The passwords, user:password pairs and tokens in the URLs of ``texts`` (to find them in files)."""
    found: set[str] = set()
    for text in texts:
        if strip_credentials(text) == text:
            continue
        for match in re.finditer(r"://([^/@\s]+)@", text):
            userinfo = match[1]
            found |= {userinfo, *(part for part in userinfo.split(":") if len(part) >= 4)}
        found |= set(re.findall(r"/t/([^/\s]+)/", text))
    return sorted(found)
