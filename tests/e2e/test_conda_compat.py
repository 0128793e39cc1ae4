"""conda's view of provisiond: .condarc honoured, environments.txt, conda-meta, shared package caches, offline."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED, Daemon, needs_shared, serve_directory, write_project

# What conda's PrefixData needs from each conda-meta/<dist>.json to list a package (conda list -p),
# and what micromamba wrote into a real prefix (contract samples/micromamba-real/artifacts).
RECORD_KEYS = {"name", "version", "build", "build_number", "channel", "subdir", "fn", "url", "md5", "sha256",
               "depends", "files", "paths_data"}
CONTRACT_ENV = SHARED / "contract" / "samples" / "micromamba-real" / "artifacts" / "env_a"


def known_prefixes(environments_txt: Path) -> list[str]:
    """What `conda env list` shows beyond its own envs_dirs (conda's list_all_known_prefixes):
    each line of environments.txt that is still a conda environment (``conda-meta/history``)."""
    lines = environments_txt.read_text().splitlines() if environments_txt.exists() else []
    return [p for p in (line.strip() for line in lines)
            if p and not p.startswith("#") and os.path.isfile(os.path.join(p, "conda-meta", "history"))]


def conda_list(prefix: Path) -> list[tuple[str, str, str, str]]:
    """`conda list -p PREFIX` as conda computes it: refused without conda-meta/history, else one
    row per conda-meta/*.json (name, version, build, channel), each record checked."""
    meta = prefix / "conda-meta"
    assert (meta / "history").is_file(), "conda: EnvironmentLocationNotFound (no conda-meta/history)"
    rows = []
    for path in sorted(meta.glob("*.json")):
        record = json.loads(path.read_text())
        missing = RECORD_KEYS - set(record)
        assert not missing, f"{path.name} lacks {sorted(missing)}"
        assert path.name == f"{record['name']}-{record['version']}-{record['build']}.json"
        assert record["fn"] == record["url"].rsplit("/", 1)[1]
        for f in record["files"]:
            assert (prefix / f).exists() or (prefix / f).is_symlink(), f"{path.name}: {f} missing in the prefix"
        assert [p["_path"] for p in record["paths_data"]["paths"]] == record["files"]
        rows.append((record["name"], record["version"], record["build"], record["channel"]))
    return rows


@pytest.fixture
def env_daemon(tmp_path: Path, short_dir: Path) -> Iterator[Daemon]:
    """A daemon as a conda user runs it: HOME with ~/.conda, .condarc read (conda_config on)."""
    home = tmp_path / "user"
    (home / ".conda").mkdir(parents=True)
    d = Daemon(home=tmp_path / "store", socket=short_dir / "d.sock")
    d.base_env.update({"HOME": str(home), "PROVISIOND_CONDA_CONFIG": "true",
                       "PROVISIOND_ENVIRONMENTS_TXT": "true"})
    for var in ("CONDARC", "CONDA_PREFIX", "CONDA_PKGS_DIRS", "CONDA_CHANNELS", "CONDA_OFFLINE", "XDG_CONFIG_HOME"):
        d.base_env.pop(var, None)
    yield d
    code = d.stop()
    assert code == 0, f"provisiond exited {code}:\n{d.log.read_text() if d.log else ''}"


def test_named_envs_are_listed_in_environments_txt(env_daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    envs_txt = Path(env_daemon.base_env["HOME"]) / ".conda" / "environments.txt"
    envs_txt.write_text("/opt/conda/envs/theirs\n")  # conda's own line: kept as it is
    env_daemon.start()
    spec = write_project(tmp_path / "a", channel, ["hello"], name="a") / "environment.yml"
    code, out, err = env_daemon.ctl("create", "-f", str(spec), "--json")
    assert code == 0, err
    prefix = json.loads(out)["prefix"]
    assert prefix in known_prefixes(envs_txt)  # `conda env list` finds it
    assert envs_txt.read_text().splitlines() == ["/opt/conda/envs/theirs", prefix]
    assert ("hello", "2.0", "0", channel.as_uri() + "/") in conda_list(Path(prefix))

    # A second name on the same env: one line. Removing one name keeps the line, the last removes it.
    code, _, err = env_daemon.ctl("create", "-f", str(spec), "-n", "b")
    assert code == 0, err
    assert envs_txt.read_text().count(prefix) == 1
    assert env_daemon.ctl("remove", "a")[0] == 0
    assert prefix in known_prefixes(envs_txt)
    assert env_daemon.ctl("remove", "b")[0] == 0
    assert envs_txt.read_text().splitlines() == ["/opt/conda/envs/theirs"]


def test_environments_txt_opt_out(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    # The test daemons write to their own file; with `environments_txt = false` nothing is written.
    daemon.stop()
    daemon.base_env["PROVISIOND_ENVIRONMENTS_TXT"] = "false"
    daemon.start()
    spec = write_project(tmp_path / "a", channel, ["hello"], name="a") / "environment.yml"
    assert daemon.ctl("create", "-f", str(spec))[0] == 0
    assert not (daemon.home.parent / "conda" / "environments.txt").exists()


@needs_shared
def test_conda_meta_matches_the_contract_sample(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    spec = write_project(tmp_path / "a", channel, ["hello", "greet-data"], name="a") / "environment.yml"
    code, out, err = daemon.ctl("create", "-f", str(spec), "--json")
    assert code == 0, err
    prefix = Path(json.loads(out)["prefix"])
    # The sample is what a real micromamba 2.8.1 wrote; `conda list` reads both the same way.
    sample = CONTRACT_ENV / "conda-meta"
    assert (sample / "history").is_file()  # what conda checks first (is_conda_environment)
    ours = {path.name: json.loads(path.read_text()) for path in (prefix / "conda-meta").glob("*.json")}
    theirs = [json.loads(path.read_text()) for path in sample.glob("*.json")]
    assert theirs and ours
    for record in ours.values():
        for sample_record in theirs:
            shared = RECORD_KEYS & set(sample_record)
            assert shared == RECORD_KEYS  # the contract sample has every key conda needs...
            assert shared <= set(record)  # ...and so do ours, with the same types
            for key in shared:
                assert type(record[key]) is type(sample_record[key]), key
        entry_keys = {k for p in theirs[0]["paths_data"]["paths"] for k in p} - {"sha256_in_prefix"}
        assert all(entry_keys - {"sha256"} <= set(p) for p in record["paths_data"]["paths"])
        assert record["paths_data"]["paths_version"] == theirs[0]["paths_data"]["paths_version"]
    assert [r[0] for r in conda_list(prefix)] == ["greet-data", "hello", "libgreet"]


def test_condarc_channels_solve_a_spec_without_channels(env_daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    home = Path(env_daemon.base_env["HOME"])
    (home / ".condarc").write_text(f"channels:\n  - {channel.as_uri()}\nchannel_priority: flexible\n")
    env_daemon.start()
    spec = tmp_path / "p" / "environment.yml"
    spec.parent.mkdir()
    spec.write_text("name: bare\ndependencies:\n  - hello\n")  # no channels: .condarc's are used
    code, out, err = env_daemon.ctl("create", "-f", str(spec), "--json")
    assert code == 0, err
    assert (Path(json.loads(out)["prefix"]) / "bin" / "hello").exists()
    code, out, _ = env_daemon.ctl("status")
    assert code == 0
    assert f"channels: {channel.as_uri()} (from {home / '.condarc'})" in out
    assert f"channel_priority: flexible (from {home / '.condarc'})" in out
    settings = env_daemon.client.get("/v1/status")["settings"]
    assert settings["sources"]["channels"] == str(home / ".condarc")


def foreign_cache(store_pkgs: Path, target: Path) -> dict[str, tuple[int, int]]:
    """A conda-style package cache made from ours: extracted dirs with info/repodata_record.json
    (what conda and micromamba write last); returns each file's (inode, mtime_ns)."""
    for entry in store_pkgs.iterdir():
        if entry.is_dir() and (entry / "info" / "index.json").is_file():
            sha256 = (store_pkgs / f"{entry.name}.lock").read_bytes()[8:40].hex()
            shutil.copytree(entry, target / entry.name)
            index = json.loads((entry / "info" / "index.json").read_text())
            (target / entry.name / "info" / "repodata_record.json").write_text(
                json.dumps({**index, "sha256": sha256, "fn": f"{entry.name}.tar.bz2"}))
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in target.rglob("*") if p.is_file()}


def test_packages_come_from_condas_cache(tmp_path: Path, short_dir: Path, channel: Path) -> None:
    first = Daemon(home=tmp_path / "one", socket=short_dir / "one.sock").start()
    try:
        spec = write_project(tmp_path / "a", channel, ["hello"], name="a") / "environment.yml"
        assert first.ctl("create", "-f", str(spec))[0] == 0
    finally:
        assert first.stop() == 0
    conda_pkgs = tmp_path / "conda" / "pkgs"
    before = foreign_cache(first.home / "pkgs", conda_pkgs)
    # A channel whose packages are gone: only the repodata is left, so the archives must come from the cache.
    bare = tmp_path / "bare-channel"
    shutil.copytree(channel, bare, ignore=shutil.ignore_patterns("*.tar.bz2", "*.conda"))
    spec = write_project(tmp_path / "b", bare, ["hello"], name="b") / "environment.yml"
    second = Daemon(home=tmp_path / "two", socket=short_dir / "two.sock")
    second.base_env["CONDA_PKGS_DIRS"] = str(conda_pkgs)
    second.base_env["PROVISIOND_CONDA_CONFIG"] = "true"
    second.start()
    try:
        code, out, err = second.ctl("create", "-f", str(spec), "--json")
        assert code == 0, err
        assert "Hello 2.0" in (Path(json.loads(out)["prefix"]) / "bin" / "hello").read_text()
        log = second.client.get("/v1/builds")["builds"][0]["log"]
        assert f"linked hello-2.0-0 from {conda_pkgs}" in Path(log).read_text()
    finally:
        assert second.stop() == 0
    after = {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in conda_pkgs.rglob("*") if p.is_file()}
    assert after == before  # their cache: nothing added, removed or rewritten
    linked = second.home / "pkgs" / "hello-2.0-0" / "bin" / "hello"
    assert linked.stat().st_ino == (conda_pkgs / "hello-2.0-0" / "bin" / "hello").stat().st_ino


def test_offline_solves_from_cached_repodata(tmp_path: Path, short_dir: Path, channel: Path) -> None:
    d = Daemon(home=tmp_path / "store", socket=short_dir / "d.sock")
    project = tmp_path / "p"
    with serve_directory(channel) as url:
        write_project(project, channel, ["hello"], name="p")
        (project / "environment.yml").write_text(f"name: p\nchannels: [{url.rstrip('/')}]\ndependencies: [hello]\n")
        d.start()
        try:
            assert d.ctl("create", "-f", str(project / "environment.yml"))[0] == 0
        finally:
            assert d.stop() == 0
    # The server is gone. Offline, an edited spec solves from the cached repodata, and installs
    # from cached packages; a package never downloaded is refused, saying so.
    d.args.append("--offline")
    d.start()
    try:
        assert d.client.get("/v1/status")["settings"]["offline"] is True
        (project / "environment.yml").write_text(
            f"name: p\nchannels: [{url.rstrip('/')}]\ndependencies: [hello 2.0]\n")
        code, _, err = d.ctl("create", "-f", str(project / "environment.yml"), "-n", "again")
        assert code == 0, err
        (project / "environment.yml").write_text(
            f"name: p\nchannels: [{url.rstrip('/')}]\ndependencies: [hello 1.0]\n")
        code, _, err = d.ctl("create", "-f", str(project / "environment.yml"), "-n", "older")
        assert code == 75, err
        assert "offline: hello-1.0-0 is in no package cache" in err
        (project / "environment.yml").write_text("name: p\nchannels: [http://127.0.0.1:9/nowhere]\n"
                                                 "dependencies: [hello]\n")
        code, _, err = d.ctl("create", "-f", str(project / "environment.yml"), "-n", "unknown")
        assert code == 75 and "offline, with cached repodata only" in err, err
    finally:
        assert d.stop() == 0


def test_sighup_rereads_condarc(env_daemon: Daemon, channel: Path) -> None:
    import signal

    home = Path(env_daemon.base_env["HOME"])
    (home / ".condarc").write_text("channel_priority: strict\n")
    env_daemon.start()
    assert env_daemon.client.get("/v1/status")["settings"]["channel_priority"] == "strict"
    (home / ".condarc").write_text(f"channel_priority: flexible\nchannels: [{channel.as_uri()}]\n")
    assert env_daemon.proc is not None
    env_daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while (settings := env_daemon.client.get("/v1/status")["settings"])["channel_priority"] != "flexible":
        assert time.monotonic() < deadline, f"SIGHUP did not re-read .condarc: {settings}"
        time.sleep(0.05)
    assert settings["channels"] == [channel.as_uri()] and settings["sources"]["channels"] == str(home / ".condarc")
