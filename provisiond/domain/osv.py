"""OSV advisories (https://ossf.github.io/osv-schema/): records, ranges in each ecosystem's version order, severity.

Two ecosystems are read: ``PyPI`` (PEP 440 order, ``packaging``) and ``conda`` (conda's order,
rattler's ``Version``; ``conda:<channel>`` counts as conda too). Other ecosystems' entries are
ignored. A range is evaluated as the OSV schema says: events in version order, ``introduced``
opens it, ``fixed`` closes it at that version, ``last_affected`` just after it; ``limit`` (git
only) is ignored. Pure: no I/O; the daemon hands parsed JSON in.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion
from packaging.version import Version as Pep440
from rattler import Version as CondaVersion
from rattler.exceptions import InvalidVersionError

from provisiond.domain.errors import ProvisionError

__all__ = ["SEVERITIES", "Advisory", "AuditDatabaseError", "Finding", "Index", "cvss3_score", "ecosystem_of",
           "normalize", "parse_record", "reaches"]

SEVERITIES = ("unknown", "low", "medium", "high", "critical")
_WORDS = {"low": "low", "moderate": "medium", "medium": "medium", "high": "high", "critical": "critical",
          "important": "high"}


class AuditDatabaseError(ProvisionError, code="bad-audit-db", http_status=400, exit_code=os.EX_DATAERR):
    """No OSV database is configured, or it cannot be read."""


@dataclass(frozen=True, slots=True)
class Affected:
    """One ``affected[]`` entry: a package in one ecosystem, its ranges and listed versions."""

    ecosystem: str
    name: str
    ranges: tuple[tuple[tuple[str, str], ...], ...]  # per range: (event kind, version) in file order
    versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    summary: str
    aliases: tuple[str, ...]
    severity: str  # one of SEVERITIES
    score: float | None  # CVSS v3 base score, when the record has a v3 vector
    affected: tuple[Affected, ...]
    withdrawn: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A package version an advisory affects, and the first version that fixes it (None: no fix yet)."""

    advisory: Advisory
    ecosystem: str
    name: str
    version: str
    fixed: str | None


def ecosystem_of(raw: str) -> str | None:
    """``PyPI`` or ``conda`` for the ecosystems read here (``conda:conda-forge`` too), else None."""
    if raw == "PyPI":
        return "PyPI"
    if raw.lower() == "conda" or raw.lower().startswith("conda:"):
        return "conda"
    return None


def normalize(ecosystem: str, name: str) -> str:
    """PEP 503 names for PyPI; lower case for conda."""
    return re.sub(r"[-_.]+", "-", name).lower() if ecosystem == "PyPI" else name.lower()


def parse_record(data: Any, origin: str = "") -> Advisory:
    """An OSV JSON record (already decoded); AuditDatabaseError when it is not one."""
    where = f"{origin}: " if origin else ""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise AuditDatabaseError(f"{where}not an OSV record (no 'id')")
    affected = []
    for entry in data.get("affected") or ():
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not isinstance(package.get("name"), str):
            continue
        ecosystem = ecosystem_of(str(package.get("ecosystem", "")))
        if ecosystem is None:
            continue
        ranges = []
        for r in entry.get("ranges") or ():
            if not isinstance(r, dict) or r.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue  # GIT ranges name commits, not versions
            events = tuple((kind, str(value)) for e in r.get("events") or () if isinstance(e, dict)
                           for kind, value in e.items() if kind in ("introduced", "fixed", "last_affected"))
            ranges.append(events)
        versions = tuple(str(v) for v in entry.get("versions") or ())
        affected.append(Affected(ecosystem, normalize(ecosystem, package["name"]), tuple(ranges), versions))
    severity, score = _severity(data)
    withdrawn = data.get("withdrawn")
    return Advisory(id=data["id"], summary=str(data.get("summary") or data.get("details") or "")[:300],
                    aliases=tuple(str(a) for a in data.get("aliases") or ()), severity=severity, score=score,
                    affected=tuple(affected), withdrawn=str(withdrawn) if withdrawn else None)


def reaches(severity: str, threshold: str) -> bool:
    """Does a finding of ``severity`` reach ``--fail-on threshold``? ``any`` counts every finding,
    unknown severities included; the others compare low < medium < high < critical."""
    if threshold == "any":
        return True
    return severity != "unknown" and SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


class Index:
    """Advisories by (ecosystem, normalised name): a package costs one dict lookup."""

    def __init__(self, advisories: Iterable[Advisory]) -> None:
        self.by_package: dict[tuple[str, str], list[tuple[Advisory, Affected]]] = {}
        self.count = 0
        for advisory in advisories:
            if advisory.withdrawn:
                continue
            self.count += 1
            for affected in advisory.affected:
                self.by_package.setdefault((affected.ecosystem, affected.name), []).append((advisory, affected))

    def findings(self, ecosystem: str, name: str, version: str) -> list[Finding]:
        """Every advisory that affects ``name`` at ``version`` in ``ecosystem``."""
        out = []
        key = normalize(ecosystem, name)
        for advisory, affected in self.by_package.get((ecosystem, key), ()):
            hit, fixed = _affects(affected, version)
            if hit:
                out.append(Finding(advisory, ecosystem, key, version, fixed))
        return out


# -- ranges ---------------------------------------------------------------------------------------

def _parser(ecosystem: str) -> Callable[[str], Any]:
    return Pep440 if ecosystem == "PyPI" else CondaVersion


def _parse(parse: Callable[[str], Any], text: str) -> Any:
    try:
        return parse(text)
    except (InvalidVersion, InvalidVersionError, ValueError):
        return None


def _affects(affected: Affected, version: str) -> tuple[bool, str | None]:
    """(affected?, the fixed version of the range that matched)."""
    parse = _parser(affected.ecosystem)
    current = _parse(parse, version)
    if version in affected.versions or (current is not None and any(
            _parse(parse, v) == current for v in affected.versions)):
        return True, _next_fix(affected, parse, current)
    if current is None:
        return False, None
    for events in affected.ranges:
        if _in_range(events, parse, current):
            return True, _fix_in(events, parse, current)
    return False, None


def _sorted_events(events: tuple[tuple[str, str], ...], parse: Callable[[str], Any]) -> list[tuple[Any, str, str]]:
    parsed = []
    for kind, raw in events:
        key = None if kind == "introduced" and raw == "0" else _parse(parse, raw)
        if key is None and not (kind == "introduced" and raw == "0"):
            continue  # a version this ecosystem cannot read: the event is unusable
        parsed.append((key, kind, raw))
    # "0" first, then by version; at one version, introduced before fixed (a zero-width range).
    return sorted(parsed, key=lambda e: (e[0] is not None, _Key(e[0]), e[1] != "introduced"))


def _in_range(events: tuple[tuple[str, str], ...], parse: Callable[[str], Any], current: Any) -> bool:
    affected = False
    for key, kind, _raw in _sorted_events(events, parse):
        if kind == "introduced" and (key is None or current >= key):
            affected = True
        elif (kind == "fixed" and current >= key) or (kind == "last_affected" and current > key):
            affected = False
    return affected


def _fix_in(events: tuple[tuple[str, str], ...], parse: Callable[[str], Any], current: Any) -> str | None:
    fixes = [(key, raw) for key, kind, raw in _sorted_events(events, parse) if kind == "fixed" and key > current]
    return fixes[0][1] if fixes else None


def _next_fix(affected: Affected, parse: Callable[[str], Any], current: Any) -> str | None:
    if current is None:
        return None
    fixes = [f for events in affected.ranges if (f := _fix_in(events, parse, current)) is not None]
    return min(fixes, key=lambda raw: _Key(parse(raw))) if fixes else None


class _Key:
    """Orders versions of one ecosystem (None, the "0" of ``introduced``, sorts first)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Key) -> bool:
        if self.value is None or other.value is None:
            return self.value is None and other.value is not None
        return bool(self.value < other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and bool(self.value == other.value)


# -- severity -------------------------------------------------------------------------------------

def _severity(data: dict[str, Any]) -> tuple[str, float | None]:
    """(severity word, CVSS v3 base score): the publisher's word (GHSA's ``database_specific``, an
    ``ecosystem_specific`` one) when there is one, else the rating of the CVSS v3 vector."""
    score = None
    for entry in data.get("severity") or ():
        if isinstance(entry, dict) and entry.get("type") == "CVSS_V3" and isinstance(entry.get("score"), str):
            score = cvss3_score(entry["score"])
            if score is not None:
                break
    words = [data.get("database_specific"),
             *(a.get("ecosystem_specific") for a in data.get("affected") or () if isinstance(a, dict)),
             *(a.get("database_specific") for a in data.get("affected") or () if isinstance(a, dict))]
    for block in words:
        word = block.get("severity") if isinstance(block, dict) else None
        if isinstance(word, str) and word.strip().lower() in _WORDS:
            return _WORDS[word.strip().lower()], score
    if score is None:
        return "unknown", None
    if score >= 9.0:
        return "critical", score
    if score >= 7.0:
        return "high", score
    if score >= 4.0:
        return "medium", score
    return ("low" if score > 0 else "unknown"), score


_CVSS3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_PR = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}


def cvss3_score(vector: str) -> float | None:
    """The CVSS v3.0/v3.1 base score of a vector (the specification's formula, section 7.1), or None."""
    parts = vector.split("/")
    if not parts or not parts[0].startswith("CVSS:3"):
        return None
    metrics = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    try:
        scope = metrics["S"]
        values = {k: _CVSS3[k][metrics[k]] for k in _CVSS3}
        privileges = _PR[scope][metrics["PR"]]
    except KeyError:
        return None
    iss = 1 - (1 - values["C"]) * (1 - values["I"]) * (1 - values["A"])
    impact = 6.42 * iss if scope == "U" else 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
    exploitability = 8.22 * values["AV"] * values["AC"] * privileges * values["UI"]
    if impact <= 0:
        return 0.0
    total = impact + exploitability if scope == "U" else 1.08 * (impact + exploitability)
    return _round_up(min(total, 10.0))


def _round_up(value: float) -> float:
    """CVSS 3.1's Roundup: the smallest one-decimal number >= value, free of float noise."""
    scaled = round(value * 100000)
    if scaled % 10000 == 0:
        return scaled / 100000.0
    return (math.floor(scaled / 10000) + 1) / 10.0
