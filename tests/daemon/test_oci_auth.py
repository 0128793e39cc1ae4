"""Registry logins from docker-style auth files (daemon/oci/auth.py): never shown, read as docker reads them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from provisiond.daemon.oci.auth import Logins, default_auth_files
from provisiond.domain.errors import ConfigError


def _write(path: Path, auths: dict) -> Path:
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_logins_by_host_in_every_spelling(tmp_path: Path) -> None:
    b64 = base64.b64encode(b"ci:pa:ss").decode()
    file = _write(tmp_path / "config.json", {
        "https://registry.corp:5000": {"auth": b64},
        "ghcr.io": {"username": "bot", "password": "tok"},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"me:hub").decode()},
        "quay.io": {"identitytoken": "refresh"},
    })
    logins = Logins([tmp_path / "missing.json", file])
    corp = logins.find("registry.corp:5000")
    assert corp is not None and (corp.username, corp.password) == ("ci", "pa:ss")
    assert "pa:ss" not in repr(corp) and corp.basic() == "Basic " + b64
    assert logins.find("ghcr.io").password == "tok"  # type: ignore[union-attr]
    assert logins.find("docker.io").username == "me"  # type: ignore[union-attr]
    assert logins.find("quay.io").identity_token == "refresh"  # type: ignore[union-attr]
    assert logins.find("elsewhere.io") is None


def test_first_file_wins_and_a_broken_file_is_a_config_error(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", {"h.io": {"username": "first", "password": "1"}})
    second = _write(tmp_path / "b.json", {"h.io": {"username": "second", "password": "2"}})
    assert Logins([first, second]).find("h.io").username == "first"  # type: ignore[union-attr]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the registry logins"):
        Logins([broken]).find("h.io")
    bad = _write(tmp_path / "bad.json", {"h.io": {"auth": "%%%"}})
    with pytest.raises(ConfigError, match="not base64"):
        Logins([bad]).find("h.io")


def test_default_files_in_docker_podman_order(tmp_path: Path) -> None:
    files = default_auth_files({"REGISTRY_AUTH_FILE": "/a.json", "XDG_RUNTIME_DIR": "/run/user/1",
                                "DOCKER_CONFIG": "/d"})
    assert files == [Path("/a.json"), Path("/run/user/1/containers/auth.json"), Path("/d/config.json")]
