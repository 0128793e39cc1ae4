""".condarc as a settings layer: conda's search path, CONDARC, CONDA_*, and provisiond's config over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.config import condarc
from provisiond.config.channels import effective_spec
from provisiond.config.settings import Settings, load_settings
from provisiond.domain.errors import ConfigError
from provisiond.domain.spec import parse_spec


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def load(env: dict[str, str], **kw: object) -> Settings:
    """Settings as the daemon loads them: with conda's layer."""
    return load_settings(environ=env, conda_layer=condarc.layer, **kw)  # type: ignore[arg-type]


def environ(home: Path, **extra: str) -> dict[str, str]:
    """A user with no provisiond config file: only conda's files and variables count."""
    return {"HOME": str(home), "PROVISIOND_CONFIG": str(home / "no-config.toml"),
            "PROVISIOND_SOCKET": "/tmp/pvd-condarc.sock", **extra}


def test_search_path_follows_condas_order(tmp_path: Path, home: Path) -> None:
    system = tmp_path / "root"
    files = [system / "etc/conda/.condarc", system / "etc/conda/condarc.d/10-site.yml",
             home / ".config/conda/condarc", home / ".conda/.condarc", home / ".condarc",
             tmp_path / "env/.condarc", tmp_path / "explicit.yml"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("channels: []\n")
    (system / "etc/conda/condarc.d/README").write_text("not yaml")
    env = environ(home, CONDA_PREFIX=str(tmp_path / "env"), CONDARC=str(tmp_path / "explicit.yml"))
    assert condarc.search_path(env, system_root=str(system)) == [str(f) for f in files]


def test_condarc_precedence_condarc_then_env_then_our_config(tmp_path: Path, home: Path) -> None:
    (home / ".condarc").write_text("channels: [conda-forge]\nchannel_alias: https://user.example/\n"
                                   "channel_priority: strict\noffline: false\n")
    explicit = tmp_path / "ci.condarc"
    explicit.write_text("channels: [bioconda]\nchannel_priority: flexible\n")
    # ~/.condarc alone
    s = load(environ(home))
    assert s.channels == ("conda-forge",) and s.channel_alias == "https://user.example/"
    assert s.channel_priority == "strict" and s.sources["channels"] == str(home / ".condarc")
    # $CONDARC comes last among the files: it wins a value and goes first in a list (conda merges lists)
    s = load(environ(home, CONDARC=str(explicit)))
    assert s.channels == ("bioconda", "conda-forge") and s.channel_priority == "flexible"
    assert s.sources["channel_priority"] == str(explicit)
    # CONDA_* variables over every file
    s = load(environ(home, CONDARC=str(explicit), CONDA_CHANNEL_PRIORITY="disabled",
                                      CONDA_OFFLINE="true"))
    assert s.channel_priority == "disabled" and s.offline and s.sources["offline"] == "env CONDA_*"
    # provisiond's own config file overrides conda's, its environment the file, a flag everything
    toml = tmp_path / "config.toml"
    toml.write_text('channel_alias = "https://ours.example/"\nchannels = ["ours"]\noffline = false\n')
    env = environ(home, CONDARC=str(explicit), CONDA_OFFLINE="true", PROVISIOND_CONFIG=str(toml))
    s = load(env)
    assert s.channel_alias == "https://ours.example/" and s.channels == ("ours",) and not s.offline
    assert s.sources["channel_alias"] == str(toml) and s.channel_priority == "flexible"
    s = load({**env, "PROVISIOND_CHANNELS": "a,b"}, overrides={"offline": True})
    assert s.channels == ("a", "b") and s.sources["channels"] == "env" and s.offline
    assert s.sources["offline"] == "flag"


def test_conda_config_false_ignores_condarc(home: Path) -> None:
    (home / ".condarc").write_text("channels: [conda-forge]\npkgs_dirs: [/opt/conda/pkgs]\n")
    s = load(environ(home, PROVISIOND_CONDA_CONFIG="false", CONDA_OFFLINE="1"))
    assert s.channels == () and s.pkgs_dirs == () and not s.offline and not s.conda_config


def test_pkgs_dirs_from_conda_pkgs_dirs_and_defaults(home: Path) -> None:
    s = load(environ(home))
    assert str(home / ".conda/pkgs") in s.pkgs_dirs and s.sources["pkgs_dirs"] == "conda's usual caches"
    assert load_settings(environ=environ(home)).pkgs_dirs == ()  # provisionctl's load: no conda layer
    s = load(environ(home, CONDA_PKGS_DIRS="~/a, /b/pkgs/"))
    assert s.pkgs_dirs == (str(home / "a"), "/b/pkgs")


def test_maps_and_checks(tmp_path: Path, home: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    (home / ".condarc").write_text(f"custom_channels:\n  internal: https://conda.corp.example/\n"
                                   f"proxy_servers:\n  https: http://proxy:3128\nssl_verify: {bundle}\n")
    s = load(environ(home))
    assert dict(s.custom_channels) == {"internal": "https://conda.corp.example"}
    assert dict(s.proxy_servers) == {"https": "http://proxy:3128"} and s.ssl_verify == str(bundle)
    assert s.to_wire()["custom_channels"] == {"internal": "https://conda.corp.example"}
    (home / ".condarc").write_text("channel_priority: sometimes\n")
    with pytest.raises(ConfigError, match=r"channel_priority='sometimes' \(.*\.condarc\)"):
        load(environ(home))
    (home / ".condarc").write_text("channels: conda-forge: [oops\n")
    with pytest.raises(ConfigError, match=r"\.condarc: cannot read conda's configuration"):
        load(environ(home))
    (home / ".condarc").write_text("ssl_verify: /no/such/bundle.pem\n")
    with pytest.raises(ConfigError, match="neither true, false nor a CA bundle"):
        load(environ(home))


def test_environments_txt_setting(tmp_path: Path, home: Path) -> None:
    assert load(environ(home)).environments_txt == home / ".conda/environments.txt"
    assert load(environ(home, PROVISIOND_ENVIRONMENTS_TXT="false")).environments_txt is None
    other = tmp_path / "envs.txt"
    assert load(environ(home, PROVISIOND_ENVIRONMENTS_TXT=str(other))).environments_txt == other


def test_effective_spec_adds_condarc_channels(tmp_path: Path, home: Path) -> None:
    (home / ".condarc").write_text("channels: [defaults, internal/label/dev]\n"
                                   "default_channels: [https://repo.example/main]\n"
                                   "custom_channels: {internal: 'https://conda.corp.example'}\n"
                                   "channel_priority: flexible\n")
    settings = load(environ(home))
    spec = parse_spec("channels: [conda-forge]\ndependencies: [python]\n", source="e.yml")
    got = effective_spec(spec, settings)
    assert got.channels == ("conda-forge", "https://repo.example/main",
                            "https://conda.corp.example/internal/label/dev")
    assert got.channel_priority == "flexible"
    assert effective_spec(got, settings) == got  # stable: it is part of the solve key
    alone = parse_spec("channels: [conda-forge, nodefaults]\ndependencies: [python]\n", source="e.yml")
    assert effective_spec(alone, settings).channels == ("conda-forge",)
    plain = load(environ(home, PROVISIOND_CONDA_CONFIG="false"))
    assert effective_spec(spec, plain) is spec
    # `defaults` with no default_channels anywhere: conda's own (repo.anaconda.com main and r)
    named = parse_spec("channels: [conda-forge, defaults]\ndependencies: [python]\n", source="e.yml")
    assert effective_spec(named, plain).channels == ("conda-forge", "https://repo.anaconda.com/pkgs/main",
                                                     "https://repo.anaconda.com/pkgs/r")
