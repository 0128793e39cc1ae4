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
    ({}, {"PROVISIOND_MAX_BUILDS": "many"}, "", "max_builds='many' (env): expected int"),
    ({}, {}, "home = [", "config.toml"),
    ({"socket": "/" + "s" * 120}, {}, "", "Unix sockets allow"),
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


def test_write_project_locks_is_a_flag(tmp_path: Path) -> None:
    none, config = tmp_path / "none.toml", tmp_path / "config.toml"
    assert load_settings({}, {}, none).write_project_locks is False
    config.write_text("write_project_locks = true\n")
    assert load_settings({}, {}, config).write_project_locks is True
    assert load_settings({}, {"PROVISIOND_WRITE_PROJECT_LOCKS": "no"}, config).write_project_locks is False
    with pytest.raises(ConfigError, match=r"write_project_locks='maybe' \(env\): expected true or false"):
        load_settings({}, {"PROVISIOND_WRITE_PROJECT_LOCKS": "maybe"}, none)
