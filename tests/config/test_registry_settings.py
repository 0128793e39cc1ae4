"""The OCI registry settings: mirrors, insecure_registries, registry_auth_file (docs/registry.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.config.settings import load_settings
from provisiond.domain.errors import ConfigError


def _load(tmp_path: Path, environ: dict[str, str], toml: str = "") -> object:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    return load_settings({"home": str(tmp_path / "h"), "socket": str(tmp_path / "s"), "state": str(tmp_path / "st")},
                         environ, config)


def test_mirrors_from_a_toml_table_and_from_the_environment(tmp_path: Path) -> None:
    s = _load(tmp_path, {}, 'insecure_registries = ["Reg.Corp:5000"]\nregistry_auth_file = "~/auth.json"\n[mirrors]\n'
                            '"https://conda.anaconda.org/conda-forge" = "oci://ghcr.io/channel-mirrors/conda-forge/"\n')
    assert s.mirrors == (("https://conda.anaconda.org/conda-forge/", "oci://ghcr.io/channel-mirrors/conda-forge"),)
    assert s.insecure_registries == ("reg.corp:5000",)
    assert s.registry_auth_file == Path("~/auth.json").expanduser()
    assert s.to_wire()["mirrors"] == {"https://conda.anaconda.org/conda-forge/": "oci://ghcr.io/channel-mirrors/conda-forge"}
    s = _load(tmp_path, {"PROVISIOND_MIRRORS": "conda-forge=oci://r.io/m/cf bioconda=oci://r.io/m/bio",
                         "PROVISIOND_INSECURE_REGISTRIES": "a:1, b"})
    assert s.mirrors == (("conda-forge/", "oci://r.io/m/cf"), ("bioconda/", "oci://r.io/m/bio"))
    assert s.insecure_registries == ("a:1", "b")


@pytest.mark.parametrize(("environ", "message"), [
    ({"PROVISIOND_MIRRORS": "conda-forge"}, "expected CHANNEL=oci://HOST/REPO pairs"),
    ({"PROVISIOND_MIRRORS": "conda-forge=https://mirror/cf"}, "a mirror is an oci://HOST/REPO URL"),
])
def test_bad_mirrors_are_config_errors(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, environ)
