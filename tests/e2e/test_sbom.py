"""provisionctl sbom: CycloneDX validated by cyclonedx-python-lib's schema validator, SPDX by spdx-tools'."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from provisiond.testing.channel import Pkg, build_channel, hello_pkg
from provisiond.testing.python import build_wheel, venv_python_pkg
from tests.conftest import Daemon, write_project

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def schannel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_channel(tmp_path_factory.mktemp("schannel"),
                         [venv_python_pkg(), hello_pkg("hello"), Pkg("needs-hello", "2.1", depends=("hello",),
                                                                   format=".tar.bz2")])


def built(daemon: Daemon, channel: Path, tmp_path: Path) -> tuple[dict, dict]:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinylib", "1.0")
    pip = "  - pip:\n" + "".join(f"      - {json.dumps(x)}\n" for x in ["--no-index", f"--find-links {wheels}",
                                                                        "tinylib==1.0"])
    project = write_project(tmp_path / "nlp", channel, ["python", "needs-hello"], name="nlp-exp", extra=pip)
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    view = json.loads(out)
    lock = daemon.client.get("/v1/envs/nlp-exp/lock")
    return view, lock


def test_cyclonedx_sbom_validates_and_describes_the_env(daemon: Daemon, schannel: Path, tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    view, lock = built(daemon, schannel, tmp_path)
    code, out, err = daemon.ctl("sbom", str(tmp_path / "nlp"))  # by the project's path
    assert code == 0, err
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(out) is None
    bom = json.loads(out)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    root = bom["metadata"]["component"]
    assert (root["name"], root["version"], root["bom-ref"]) == ("nlp-exp", view["env_key"], f"env:{view['env_key']}")
    assert {"name": "provisiond:prefix", "value": view["prefix"]} in root["properties"]

    components = {c["name"]: c for c in bom["components"]}
    assert sorted(components) == sorted([p["name"] for p in lock["packages"]] + ["tinylib"])
    channel = schannel.as_uri()
    for p in lock["packages"]:
        c = components[p["name"]]
        kind = "conda" if p["file_name"].endswith(".conda") else "tar.bz2"
        assert c["purl"] == (f"pkg:conda/{p['name']}@{p['version']}?build={p['build']}"
                             f"&channel={channel}&subdir={p['subdir']}&type={kind}")
        assert {"alg": "SHA-256", "content": p["sha256"]} in c["hashes"]
        assert {"alg": "MD5", "content": p["md5"]} in c["hashes"]
        assert c["licenses"] == [{"license": {"id": "BSD-3-Clause"}}]  # conda-meta's license
        assert c["externalReferences"] == [{"type": "distribution", "url": p["url"]}]
    assert components["needs-hello"]["purl"].endswith("&type=tar.bz2")
    pin = lock["pip"][0]
    assert components["tinylib"]["purl"] == "pkg:pypi/tinylib@1.0"
    assert components["tinylib"]["hashes"] == [{"alg": "SHA-256", "content": pin["sha256"]}]

    graph = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert sorted(graph[f"env:{view['env_key']}"]) == sorted(c["bom-ref"] for c in bom["components"])
    assert graph["conda:needs-hello"] == ["conda:hello"]

    # -o FILE, and by name.
    code, out, err = daemon.ctl("sbom", "nlp-exp", "-o", str(tmp_path / "bom.json"))
    assert code == 0, err
    assert out.strip() == f"wrote {tmp_path / 'bom.json'} (cyclonedx)"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str((tmp_path / "bom.json").read_text()) is None


def test_spdx_sbom_validates(daemon: Daemon, schannel: Path, tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    view, lock = built(daemon, schannel, tmp_path)
    code, _, err = daemon.ctl("sbom", "nlp-exp", "--format", "spdx", "-o", str(tmp_path / "env.spdx.json"))
    assert code == 0, err
    document = parse_file(str(tmp_path / "env.spdx.json"))
    assert validate_full_spdx_document(document) == []
    packages = {p.name: p for p in document.packages}
    assert packages["nlp-exp"].version == view["env_key"]
    hello = next(p for p in lock["packages"] if p["name"] == "hello")
    assert [r.locator for r in packages["hello"].external_references] == [
        f"pkg:conda/hello@{hello['version']}?build={hello['build']}&channel={schannel.as_uri()}"
        f"&subdir={hello['subdir']}&type=conda"]
    assert str(packages["hello"].license_declared) == "BSD-3-Clause"
    assert {c.value for c in packages["hello"].checksums} == {hello["sha256"], hello["md5"]}
    described = [r for r in document.relationships if r.relationship_type.name == "DESCRIBES"]
    assert [r.related_spdx_element_id for r in described] == [packages["nlp-exp"].spdx_id]


def test_sbom_of_an_unknown_or_unbuilt_env_is_a_clear_error(daemon: Daemon, schannel: Path, tmp_path: Path) -> None:
    code, _, err = daemon.ctl("sbom", "nope")
    assert code == 66 and "no env or project 'nope'" in err
    write_project(tmp_path / "p", schannel, ["hello"], name="later")
    assert daemon.ctl("watch", str(tmp_path / "p"), "--no-warm")[0] == 0
    code, _, err = daemon.ctl("sbom", "later")
    assert code == 66 and "has not been built yet" in err
    status, body = daemon.raw("GET", "/v1/envs/later/sbom?format=xml")
    assert (status, body["error"]["code"]) == (404, "env-not-found")  # not built: checked before the format
    write_project(tmp_path / "q", schannel, ["hello"], name="built")
    assert daemon.ctl("warm", str(tmp_path / "q"))[0] == 0
    status, body = daemon.raw("GET", "/v1/envs/built/sbom?format=xml")
    assert (status, body["error"]["code"]) == (400, "bad-request") and "cyclonedx, spdx" in body["error"]["hint"]
