"""Through a real daemon (issue 12.3, 12.5, 12.6): the same packages from an md5-only @EXPLICIT file, a
sha256-only conda-lock.yml and a pixi.lock are one env; a pixi environment is chosen with --environment;
`activate NAME` of a file env exports its `variables:`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Daemon


def ctl_json(daemon: Daemon, *args: str) -> dict:
    code, out, err = daemon.ctl(*args, "--json")
    assert code == 0, err + out
    return json.loads(out)


def test_three_lockfile_formats_give_one_env(daemon: Daemon, channel: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIOND_HOME", str(daemon.home))  # provisionctl reads the daemon's store, as a user's does
    spec = tmp_path / "environment.yml"
    spec.write_text(f"name: base\nchannels: [{channel.as_uri()}]\ndependencies: [hello, greet-data]\n"
                    "variables:\n  CUDA_VERSION: 11.10\n  DEBUG: False\n")
    base = ctl_json(daemon, "create", "-f", str(spec))
    packages = ctl_json(daemon, "show", "base", "--lock")["lock"]["packages"]
    assert len(packages) == 3
    explicit = tmp_path / "spec.txt"
    explicit.write_text("@EXPLICIT\n" + "".join(f"{p['url']}#{p['md5']}\n" for p in packages))
    conda_lock = tmp_path / "conda-lock.yml"
    conda_lock.write_text("version: 1\nmetadata:\n  platforms: [linux-64]\n  channels: []\npackage:\n" + "".join(
        f"- {{name: {p['name']}, version: '{p['version']}', manager: conda, platform: linux-64, dependencies: {{}},"
        f" url: '{p['url']}', hash: {{sha256: {p['sha256']}}}, category: main, optional: false}}\n"
        for p in packages))
    first = packages[0]["url"]
    pixi = tmp_path / "pixi.lock"
    pixi.write_text(
        "version: 6\nenvironments:\n  default:\n    channels:\n      - url: " + channel.as_uri() + "/\n"
        "    packages:\n      linux-64:\n" + "".join(f"        - conda: {p['url']}\n" for p in packages)
        + "  small:\n    channels:\n      - url: " + channel.as_uri() + "/\n    packages:\n      linux-64:\n"
        + f"        - conda: {first}\n" + "packages:\n"
        + "".join(f"  - conda: {p['url']}\n    name: {p['name']}\n    version: '{p['version']}'\n"
                  f"    build: '{p['build']}'\n    subdir: {p['subdir']}\n"
                  f"    sha256: {p['sha256']}\n    md5: {p['md5']}\n" for p in packages))
    keys = {}
    for name, path in (("from-explicit", explicit), ("from-conda-lock", conda_lock), ("from-pixi", pixi)):
        view = ctl_json(daemon, "create", "-f", str(path), "-n", name)
        keys[name] = view["env_key"]
    assert set(keys.values()) == {base["env_key"]}, keys
    small = ctl_json(daemon, "create", "-f", str(pixi), "-n", "small", "--environment", "small")
    assert small["env_key"] != base["env_key"]
    assert [p["name"] for p in ctl_json(daemon, "show", "small", "--lock")["lock"]["packages"]] == \
        [packages[0]["name"]]
    # The environment is remembered: a warm re-reads the lock for the same environment.
    assert ctl_json(daemon, "warm", "small")["env_key"] == small["env_key"]
    # One allowance covers all of a pixi.lock's environments: creating `small` did not block `from-pixi`.
    assert ctl_json(daemon, "warm", "from-pixi")["env_key"] == base["env_key"]
    ctl_json(daemon, "allow", str(pixi))
    assert ctl_json(daemon, "warm", "small")["env_key"] == small["env_key"]
    assert ctl_json(daemon, "warm", "from-pixi")["env_key"] == base["env_key"]
    code, _out, err = daemon.ctl("create", "-f", str(pixi), "-n", "nope", "--environment", "gpu")
    assert code == 65 and "no environment 'gpu' (it has: default, small)" in err

    # `activate NAME` of a file env exports its variables, spelled as in the file.
    script = ctl_json(daemon, "activate", "base", "--shell", "json")["script"]
    variables = json.loads(script)["set"]
    assert variables["CUDA_VERSION"] == "11.10" and variables["DEBUG"] == "False"
    code, out, _err = daemon.ctl("activate", "base", "--shell", "bash")
    assert code == 0 and "CUDA_VERSION" in out and "11.10" in out
