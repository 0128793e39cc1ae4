"""provisionctl audit and GET /v1/audit against a small OSV database the test writes (zip and directory)."""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.channel import Pkg, build_channel, hello_pkg
from provisiond.testing.python import build_wheel, venv_python_pkg
from tests.conftest import Daemon, write_project

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8


def record(id: str, ecosystem: str, name: str, events: list[dict], **extra: object) -> dict:
    return {"schema_version": "1.6.0", "id": id, "modified": "2026-01-01T00:00:00Z", "summary": f"{name} is bad",
            "affected": [{"package": {"ecosystem": ecosystem, "name": name},
                          "ranges": [{"type": "ECOSYSTEM", "events": events}]}], **extra}


RECORDS = [
    # conda ecosystem, introduced/fixed, severity from the CVSS vector.
    record("CONDA-2026-1", "conda", "openssl", [{"introduced": "3.0"}, {"fixed": "3.0.10"}],
           aliases=["CVE-2026-0001"], severity=[{"type": "CVSS_V3", "score": CRITICAL}]),
    # PyPI, matched through the dist-info a conda package installs (conda name pyyaml, PyPI PyYAML).
    record("GHSA-yaml-0000-0000", "PyPI", "pyyaml", [{"introduced": "0"}, {"fixed": "5.4"}],
           database_specific={"severity": "MODERATE"}),
    # PyPI, matched against a pip: package; no severity at all.
    record("PYSEC-2026-7", "PyPI", "tinylib", [{"introduced": "0"}, {"fixed": "1.1"}]),
    # last_affected: 1.0 is affected, 2.0 is not.
    record("CONDA-2026-2", "conda", "tool-a", [{"introduced": "0"}, {"last_affected": "1.0"}],
           database_specific={"severity": "LOW"}),
    # withdrawn: never reported.
    record("CONDA-2026-3", "conda", "hello", [{"introduced": "0"}], withdrawn="2026-02-01T00:00:00Z"),
    # another ecosystem: ignored.
    record("RUSTSEC-2026-1", "crates.io", "openssl", [{"introduced": "0"}]),
]


def write_zip(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for r in records:
            zf.writestr(f"{r['id']}.json", json.dumps(r))
    os.replace(tmp, path)  # as a download replaces it: a new inode


@pytest.fixture(scope="module")
def achannel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = f"lib/{PY}/site-packages"
    pyyaml = Pkg("pyyaml", "5.3", depends=("python",), files={
        f"{site}/yaml/__init__.py": "",
        f"{site}/PyYAML-5.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3\n"})
    packages = [venv_python_pkg(), hello_pkg("hello"), Pkg("openssl", "3.0.2"), Pkg("openssl", "3.0.10"),
                Pkg("tool-a", "1.0"), Pkg("tool-a", "2.0"), pyyaml]
    return build_channel(tmp_path_factory.mktemp("achannel"), packages)


@pytest.fixture
def auditing(tmp_path: Path, short_dir: Path) -> Iterator[tuple[Daemon, Path]]:
    """A daemon whose audit_db setting is a zip the test writes."""
    db = tmp_path / "osv" / "all.zip"
    db.parent.mkdir()
    write_zip(db, RECORDS)
    d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock")
    d.base_env["PROVISIOND_AUDIT_DB"] = str(db)
    d.start()
    yield d, db
    assert d.stop() == 0


def build_envs(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinylib", "1.0")
    pip = "  - pip:\n" + "".join(f"      - {json.dumps(x)}\n" for x in ["--no-index", f"--find-links {wheels}",
                                                                        "tinylib==1.0"])
    write_project(tmp_path / "vuln", channel, ["python", "openssl 3.0.2", "pyyaml", "hello"], name="vuln", extra=pip)
    assert daemon.ctl("warm", str(tmp_path / "vuln"))[0] == 0
    for name, deps in (("safe", ["openssl 3.0.10", "hello"]), ("old-tool", ["tool-a 1.0"]),
                       ("new-tool", ["tool-a 2.0"])):
        write_project(tmp_path / name, channel, deps, name=name)
        code, _, err = daemon.ctl("create", "-f", str(tmp_path / name / "environment.yml"))
        assert code == 0, err


def found(result: dict) -> set[tuple[str, str, str, str | None]]:
    return {(f["env"], f["package"], f["advisory"], f["fixed"]) for f in result["findings"]}


def test_audit_finds_exactly_the_vulnerable_envs(auditing: tuple[Daemon, Path], achannel: Path,
                                                 tmp_path: Path) -> None:
    daemon, db = auditing
    build_envs(daemon, achannel, tmp_path)
    code, out, err = daemon.ctl("audit", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert found(result) == {("vuln", "openssl", "CONDA-2026-1", "3.0.10"),
                             ("vuln", "pyyaml", "GHSA-yaml-0000-0000", "5.4"),
                             ("vuln", "tinylib", "PYSEC-2026-7", "1.1"),
                             ("old-tool", "tool-a", "CONDA-2026-2", None)}
    assert result["envs"] == 4 and result["db"]["advisories"] == 5 and result["db"]["withdrawn"] == 1
    rows = {f["advisory"]: f for f in result["findings"]}
    assert (rows["CONDA-2026-1"]["severity"], rows["CONDA-2026-1"]["score"]) == ("critical", 9.8)
    assert rows["GHSA-yaml-0000-0000"]["severity"] == "medium"
    assert rows["GHSA-yaml-0000-0000"]["ecosystem"] == "PyPI" and rows["GHSA-yaml-0000-0000"]["source"] == "conda"
    assert rows["PYSEC-2026-7"]["severity"] == "unknown" and rows["PYSEC-2026-7"]["source"] == "pip"
    assert rows["CONDA-2026-1"]["project"] == str(tmp_path / "vuln")

    code, out, err = daemon.ctl("audit")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ENV", "PROJECT", "PACKAGE", "VERSION", "ADVISORY", "SEVERITY", "FIXED"]
    assert lines[1].split() == ["old-tool", "-", "tool-a", "1.0", "CONDA-2026-2", "low", "no", "fix"]
    rows_text = {next(t for t in line.split() if t.startswith(("CONDA-", "PYSEC-", "GHSA-"))): line.split()
                 for line in lines[1:-2]}
    assert rows_text["CONDA-2026-1"] == ["vuln", str(tmp_path / "vuln"), "openssl", "3.0.2", "CONDA-2026-1",
                                         "(CVE-2026-0001)", "critical", "9.8", "3.0.10"]
    assert rows_text["PYSEC-2026-7"][2:6] == ["tinylib", "(pip)", "1.0", "PYSEC-2026-7"]
    assert lines[-2:] == ["4 findings in 2 of 4 envs",
                          f"database: {db} (5 advisories, 1 withdrawn skipped)"]

    # --fail-on: non-zero exactly when a finding reaches the severity.
    assert daemon.ctl("audit", "--fail-on", "critical")[0] == 1
    assert daemon.ctl("audit", "old-tool", "--fail-on", "medium")[0] == 0
    assert daemon.ctl("audit", "old-tool", "--fail-on", "low")[0] == 1
    assert daemon.ctl("audit", "safe", "--fail-on", "any")[0] == 0
    code, out, _ = daemon.ctl("audit", str(tmp_path / "vuln"), "--fail-on", "high")
    assert code == 1 and "failing: findings at or above --fail-on high" in out

    # One package, by its conda or its PyPI name: which envs still have it?
    for name in ("pyyaml", "PyYAML"):
        code, out, err = daemon.ctl("audit", "--package", name, "--json")
        assert code == 0, err
        assert found(json.loads(out)) == {("vuln", "pyyaml", "GHSA-yaml-0000-0000", "5.4")}

    # --db: a directory of OSV JSON instead of the configured zip.
    other = tmp_path / "osv-dir" / "PyPI"
    other.mkdir(parents=True)
    (other / "x.json").write_text(json.dumps(record("PYSEC-2026-9", "PyPI", "tinylib", [{"introduced": "0.5"}],
                                                    versions=["1.0"])))
    (other / "broken.json").write_text("{not json")
    code, out, err = daemon.ctl("audit", "--db", str(other.parent), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert found(result) == {("vuln", "tinylib", "PYSEC-2026-9", None)}
    assert result["db"]["invalid"] == 1

    code, _, err = daemon.ctl("audit", "--db", str(tmp_path / "missing.zip"))
    assert code == 65 and "no such OSV database" in err


def test_a_changed_database_updates_the_audit(auditing: tuple[Daemon, Path], achannel: Path, tmp_path: Path) -> None:
    daemon, db = auditing
    build_envs(daemon, achannel, tmp_path)
    assert len(daemon.client.get("/v1/audit")["findings"]) == 4

    # The openssl advisory is withdrawn and a new one names tool-a 2.0.
    changed = [r for r in RECORDS if r["id"] != "CONDA-2026-1"]
    changed.append({**RECORDS[0], "withdrawn": "2026-03-01T00:00:00Z"})
    changed.append(record("CONDA-2026-4", "conda", "tool-a", [{"introduced": "2.0"}, {"fixed": "2.1"}]))
    write_zip(db, changed)
    result = daemon.client.get("/v1/audit")
    assert found(result) == {("vuln", "pyyaml", "GHSA-yaml-0000-0000", "5.4"),
                             ("vuln", "tinylib", "PYSEC-2026-7", "1.1"),
                             ("old-tool", "tool-a", "CONDA-2026-2", None),
                             ("new-tool", "tool-a", "CONDA-2026-4", "2.1")}
    assert result["db"]["withdrawn"] == 2

    # The daemon noticed the change by itself and audited every env again.
    assert daemon.log is not None
    deadline = time.monotonic() + 60
    while "OSV database" not in daemon.log.read_text() or " changed: auditing every env again" not in \
            daemon.log.read_text():
        assert time.monotonic() < deadline, daemon.log.read_text()[-2000:]
        time.sleep(0.05)


def test_audit_without_a_database_says_how_to_configure_one(daemon: Daemon) -> None:
    code, _, err = daemon.ctl("audit")
    assert code == 65
    assert "no OSV database is configured" in err and "audit_db" in err
    status, body = daemon.raw("GET", "/v1/audit?env=nope&db=/tmp")
    assert status == 404 and body["error"]["code"] == "env-not-found"
