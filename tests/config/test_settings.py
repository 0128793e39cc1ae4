"""Settings precedence: flag > PROVISIOND_* env > TOML file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.config.settings import load_settings
from provisiond.domain.errors import ConfigError


def test_precedence(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('home = "/from/file"\nmax_builds = 3\n[engine]\nname = "rattler"\n')
    env = {"PROVISIOND_HOME": "/from/env", "PROVISIOND_MAX_BUILDS": "5"}
    s = load_settings({"home": "/from/flag"}, env, config)
    assert s.paths.home == Path("/from/flag") and s.max_builds == 5 and s.engine == "rattler"
    s = load_settings({}, env, config)
    assert s.paths.home == Path("/from/env")
    s = load_settings({}, {}, config)
    assert s.paths.home == Path("/from/file") and s.max_builds == 3
    assert s.paths.socket == Path("/from/file/provisiond.sock")
    assert s.paths.prefix("ab" * 32) == Path("/from/file/envs/abababababababab")


def test_defaults_come_from_platformdirs(tmp_path: Path) -> None:
    s = load_settings({}, {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}, tmp_path / "none.toml")
    assert s.engine == "auto" and s.max_builds >= 1 and s.config_file is None


@pytest.mark.parametrize(("overrides", "env", "text", "needle"), [
    ({"engine": "conda"}, {}, "", "unknown engine"),
    ({}, {"PROVISIOND_MICROMAMBA_INSTALL": "conda"}, "", "micromamba_install='conda': unknown installer"),
    ({}, {"PROVISIOND_MAX_BUILDS": "many"}, "", "max_builds='many' (env): expected int"),
    ({}, {}, "home = [", "config.toml"),
    ({"socket": "/" + "s" * 120}, {}, "", "Unix sockets allow"),
    ({}, {"PROVISIOND_CHANGEPS1": "maybe"}, "", "changeps1='maybe' (env): expected true or false"),
])


def test_bad_settings_name_key_and_source(tmp_path: Path, overrides: dict, env: dict, text: str, needle: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(overrides, {"PROVISIOND_HOME": str(tmp_path), **env}, config)
    assert needle in info.value.message


def test_log_file_is_an_absolute_path_from_any_layer(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'log_file = "{tmp_path}/logs/../from-file.log"\n')
    env = {"PROVISIOND_HOME": str(tmp_path / "home")}
    assert load_settings({}, env, config).log_file == tmp_path / "from-file.log"
    s = load_settings({}, {**env, "PROVISIOND_LOG_FILE": "rel.log"}, config)
    assert s.log_file == Path.cwd() / "rel.log"
    assert load_settings({"log_file": "/flag.log"}, env, config).log_file == Path("/flag.log")
    assert load_settings({}, env, tmp_path / "none.toml").log_file is None


def test_api_limits_are_settings(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    s = load_settings({}, {"PROVISIOND_MAX_CONNECTIONS": "8", "PROVISIOND_READ_TIMEOUT": "2.5"}, none)
    assert (s.max_connections, s.read_timeout) == (8, 2.5)
    assert (load_settings({}, {}, none).max_connections, load_settings({}, {}, none).read_timeout) == (64, 10.0)
    for key, value in (("MAX_CONNECTIONS", "0"), ("READ_TIMEOUT", "0"), ("READ_TIMEOUT", "nan"), ("READ_TIMEOUT", "inf")):
        with pytest.raises(ConfigError, match=key.lower()):
            load_settings({}, {f"PROVISIOND_{key}": value}, none)


def test_micromamba_install_from_the_engine_table_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[engine]\nname = "micromamba"\nmicromamba_install = "micromamba"\n')
    home = {"PROVISIOND_HOME": "/h"}
    assert load_settings({}, home, config).micromamba_install == "micromamba"
    assert load_settings({}, {**home, "PROVISIOND_MICROMAMBA_INSTALL": "rattler"}, config).micromamba_install == \
        "rattler"
    # the default: micromamba solves, rattler's installer links (docs/micromamba.md, "Speed")
    assert load_settings({}, home, tmp_path / "none.toml").micromamba_install == "rattler"


def test_default_channels_setting(tmp_path: Path) -> None:
    from provisiond.domain.errors import ConfigError

    none = tmp_path / "none.toml"
    assert load_settings({}, {}, none).default_channels == ("https://repo.anaconda.com/pkgs/main",
                                                            "https://repo.anaconda.com/pkgs/r")
    config = tmp_path / "c.toml"
    config.write_text('default_channels = ["https://mirror.example/main/", "conda-forge"]\n')
    s = load_settings({}, {}, config)
    assert s.default_channels == ("https://mirror.example/main", "conda-forge")
    assert s.to_wire()["default_channels"] == ["https://mirror.example/main", "conda-forge"]
    env = {"PROVISIOND_DEFAULT_CHANNELS": "https://a.example/x, https://b.example/y"}
    assert load_settings({}, env, config).default_channels == ("https://a.example/x", "https://b.example/y")
    config.write_text("default_channels = []\n")
    assert load_settings({}, {}, config).default_channels == ()
    config.write_text('default_channels = ["defaults"]\n')
    with pytest.raises(ConfigError, match="cannot contain 'defaults'"):
        load_settings({}, {}, config)
    config.write_text("default_channels = 3\n")
    with pytest.raises(ConfigError, match="expected a list"):
        load_settings({}, {}, config)


def test_jupyter_data_dir_is_found_as_jupyter_core_finds_it(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    home = {"HOME": str(tmp_path), "PROVISIOND_SOCKET": "/tmp/pvd-unused.sock"}
    assert load_settings({}, home, none).jupyter_data_dir == tmp_path / ".local/share/jupyter"
    xdg = {**home, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert load_settings({}, xdg, none).jupyter_data_dir == tmp_path / "xdg/jupyter"
    explicit = {**xdg, "JUPYTER_DATA_DIR": str(tmp_path / "jd")}
    assert load_settings({}, explicit, none).jupyter_data_dir == tmp_path / "jd"
    config = tmp_path / "config.toml"
    config.write_text(f'jupyter_data_dir = "{tmp_path / "cfg"}"\nkernels = false\naudit_db = "~/osv.zip"\n')
    s = load_settings({}, explicit, config)
    assert (s.jupyter_data_dir, s.kernels) == (tmp_path / "cfg", False)
    assert s.audit_db == Path("~/osv.zip").expanduser()
    assert load_settings({}, home, none).kernels is True and load_settings({}, home, none).audit_db is None


@pytest.mark.parametrize(("raw", "value"), [("0", False), ("off", False), ("no", False), ("1", True), ("TRUE", True)])


def test_kernels_flag_from_the_environment(tmp_path: Path, raw: str, value: bool) -> None:
    env = {"PROVISIOND_KERNELS": raw, "PROVISIOND_SOCKET": "/tmp/pvd-unused.sock"}
    assert load_settings({}, env, tmp_path / "none.toml").kernels is value


def test_kernels_flag_that_is_not_a_boolean_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kernels='maybe' \(env\): expected true or false"):
        load_settings({}, {"PROVISIOND_KERNELS": "maybe", "PROVISIOND_SOCKET": "/tmp/x.sock"}, tmp_path / "none.toml")


def test_changeps1_is_on_by_default_and_off_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("changeps1 = false\n")
    base = {"PROVISIOND_HOME": str(tmp_path)}
    assert load_settings({}, base, tmp_path / "none.toml").changeps1 is True
    assert load_settings({}, base, config).changeps1 is False
    assert load_settings({}, {**base, "PROVISIOND_CHANGEPS1": "1"}, config).changeps1 is True
    assert load_settings({}, {**base, "PROVISIOND_CHANGEPS1": "off"}, tmp_path / "none.toml").changeps1 is False


def test_write_project_locks_is_a_flag(tmp_path: Path) -> None:
    none, config = tmp_path / "none.toml", tmp_path / "config.toml"
    assert load_settings({}, {}, none).write_project_locks is False
    config.write_text("write_project_locks = true\n")
    assert load_settings({}, {}, config).write_project_locks is True
    assert load_settings({}, {"PROVISIOND_WRITE_PROJECT_LOCKS": "no"}, config).write_project_locks is False
    with pytest.raises(ConfigError, match=r"write_project_locks='maybe' \(env\): expected true or false"):
        load_settings({}, {"PROVISIOND_WRITE_PROJECT_LOCKS": "maybe"}, none)
