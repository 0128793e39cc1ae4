"""OSV records: ranges in each ecosystem's version order, withdrawn advisories, severity."""

from __future__ import annotations

import pytest

from provisiond.domain.osv import AuditDatabaseError, Index, cvss3_score, parse_record, reaches


def advisory(ecosystem: str, name: str, *ranges: list[dict], versions: tuple[str, ...] = (), **extra: object) -> dict:
    return {"id": "OSV-1", "affected": [{"package": {"ecosystem": ecosystem, "name": name},
                                         "ranges": [{"type": "ECOSYSTEM", "events": r} for r in ranges],
                                         "versions": list(versions)}], **extra}


def hits(data: dict, ecosystem: str, name: str, version: str) -> list[str | None]:
    """The fixed version of each finding (an empty list: not affected)."""
    return [f.fixed for f in Index([parse_record(data)]).findings(ecosystem, name, version)]


@pytest.mark.parametrize(("version", "expected"), [
    ("0.9", ["1.0"]), ("1.0", []), ("1.5", []), ("2.0", ["2.2"]), ("2.1.post1", ["2.2"]), ("2.2", []),
    ("3.0", []), ("3.0rc1", []), ("3.1", ["no-fix"]), ("3.4", ["no-fix"]), ("3.4.1", []), ("4.0.dev0", []),
])
def test_pypi_ranges_use_pep440_order(version: str, expected: list[str]) -> None:
    data = advisory("PyPI", "Requests",
                    [{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.2"}],
                    [{"introduced": "3.1"}, {"last_affected": "3.4"}])
    assert [f or "no-fix" for f in hits(data, "PyPI", "requests", version)] == expected


def test_pypi_names_are_pep503_normalised() -> None:
    data = advisory("PyPI", "Zope.Interface", [{"introduced": "0"}, {"fixed": "5"}])
    assert hits(data, "PyPI", "zope-interface", "4.0") == ["5"]
    assert hits(data, "PyPI", "ZOPE_interface", "4.0") == ["5"]
    assert hits(data, "conda", "zope.interface", "4.0") == []  # another ecosystem


@pytest.mark.parametrize(("version", "affected"), [
    ("1.1.1w", False), ("3.0.2", True), ("3.0.9", True), ("3.0.10", False), ("3.0.10a", True),
    ("3.0.0a", False), ("3.0", True),
])
def test_conda_ranges_use_conda_order(version: str, affected: bool) -> None:
    # In conda's order 3.0.10 > 3.0.9, 1.1.1w < 3.0, and a letter sorts before the number alone
    # (3.0.0a < 3.0, 3.0.10a < 3.0.10).
    data = advisory("conda", "openssl", [{"introduced": "3.0"}, {"fixed": "3.0.10"}])
    assert bool(hits(data, "conda", "openssl", version)) is affected


def test_conda_channel_qualified_ecosystem_and_explicit_versions() -> None:
    data = advisory("conda:conda-forge", "libfoo", versions=("1.2.3",))
    assert hits(data, "conda", "libfoo", "1.2.3") == [None]
    assert hits(data, "conda", "libfoo", "1.2.4") == []


def test_withdrawn_and_foreign_records_are_not_indexed() -> None:
    withdrawn = parse_record({**advisory("PyPI", "x", [{"introduced": "0"}]), "withdrawn": "2026-01-01T00:00:00Z"})
    foreign = parse_record(advisory("npm", "x", [{"introduced": "0"}]))
    index = Index([withdrawn, foreign])
    assert index.count == 1 and index.findings("PyPI", "x", "1.0") == []


def test_git_ranges_and_unreadable_versions_match_nothing() -> None:
    data = {"id": "G", "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},
                                     "ranges": [{"type": "GIT", "events": [{"introduced": "0"}]},
                                                {"type": "ECOSYSTEM", "events": [{"introduced": "not a version"}]}]}]}
    assert hits(data, "PyPI", "x", "1.0") == []
    assert hits(advisory("PyPI", "x", [{"introduced": "0"}]), "PyPI", "x", "garbage!") == []


def test_not_a_record_is_a_clear_error() -> None:
    with pytest.raises(AuditDatabaseError, match=r"x\.json: not an OSV record"):
        parse_record(["a list"], "x.json")


@pytest.mark.parametrize(("vector", "score"), [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
    ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
    ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", None),
    ("CVSS:3.1/AV:X", None),
])
def test_cvss3_base_scores(vector: str, score: float | None) -> None:
    assert cvss3_score(vector) == score


def test_severity_prefers_the_publishers_word_then_the_vector() -> None:
    vector = [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"}]
    assert (parse_record({"id": "a", "severity": vector}).severity) == "medium"
    assert parse_record({"id": "a", "severity": vector, "database_specific": {"severity": "HIGH"}}).severity == "high"
    assert parse_record({"id": "a"}).severity == "unknown"


def test_fail_on_thresholds() -> None:
    assert reaches("critical", "high") and reaches("high", "high") and not reaches("medium", "high")
    assert reaches("unknown", "any") and not reaches("unknown", "low")
