"""The per-user credentials file: clean URLs out, credentials back in memory (credentials.py)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from provisiond.domain.errors import ConfigError
from provisiond.store.credentials import Credentials


def test_remember_keeps_credentials_in_one_private_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "credentials.json"
    creds = Credentials(path)
    assert not creds and not path.exists()
    assert creds.remember("https://repo.example/conda-forge/") == "https://repo.example/conda-forge/"
    assert not path.exists() and creds.generation == 0  # nothing secret, nothing written

    assert creds.remember("https://repo.example/t/tok-1/private/") == "https://repo.example/private/"
    assert creds.remember("https://bob:p%40ss@host.example:8443/c/") == "https://host.example:8443/c/"
    assert creds.generation == 2
    assert creds.remember("https://repo.example/t/tok-1/private/") == "https://repo.example/private/"
    assert creds.generation == 2  # unchanged: no rewrite, no new HTTP client
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    again = Credentials(path)  # a restarted daemon
    assert again.attach("https://repo.example/private/linux-64/x-1-0.conda") == \
        "https://repo.example/t/tok-1/private/linux-64/x-1-0.conda"
    assert again.attach("https://other.example/c/x.conda") == "https://other.example/c/x.conda"

    # A rotated token replaces the old one.
    assert again.remember("https://repo.example/t/tok-2/private/") == "https://repo.example/private/"
    assert again.mirrors()["https://repo.example/private/"] == ["https://repo.example/t/tok-2/private/"]


def test_tokens_become_mirrors_and_passwords_headers(tmp_path: Path) -> None:
    creds = Credentials(tmp_path / "credentials.json")
    creds.remember("https://repo.example/t/tok/private/")
    creds.remember("https://bob:p%40ss@host.example:8443/c/")
    creds.remember("https://ann:pw2@host.example/c/sub/")
    assert creds.mirrors() == {"https://repo.example/private/": ["https://repo.example/t/tok/private/"]}

    def user_of(headers: dict[str, str] | None) -> str | None:
        return base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode() if headers else None

    assert user_of(creds.headers("host.example", "/c/linux-64/repodata.json")) == "bob:p@ss"
    assert user_of(creds.headers("host.example", "/c/sub/noarch/x.conda")) == "ann:pw2"  # the longest path wins
    assert creds.headers("host.example", "/elsewhere/x") is None
    assert creds.headers("repo.example", "/private/x") is None  # a token is not a header


@pytest.mark.parametrize("text", ["{not json", '{"version": 2, "channels": {}}', "[]"])
def test_a_broken_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="credentials") as err:
        Credentials(path)
    assert err.value.hint and "remove it" in err.value.hint
