"""The micromamba engine against real micromamba 2.8.1 outputs, replayed by a stand-in executable.

micromamba cannot be installed here, so ``micromamba_standin.py`` (copied to ``tmp/micromamba``)
replays the recordings in ``shared/contract/samples/micromamba-real/``: the engine, the real
``_process.run_process`` (pipes, timeouts, process groups, cancellation), the store and the
provisioner all run for real. Where a sample is combined or reshaped (the newer JSON shape,
stderr under ``--log-level error``), the test says so and cites the contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisiond.config.settings import Settings, load_settings
from provisiond.daemon.builder import Builder
from provisiond.domain.errors import ChannelTimeoutError, ConfigError, EngineError, ShuttingDownError, SolveError
from provisiond.domain.lock import Lock
from provisiond.domain.spec import parse_spec
from provisiond.engines._process import run_process
from provisiond.engines.choose import engine_for
from provisiond.engines.micromamba import MicromambaEngine
from provisiond.engines.rattler import RattlerEngine
from provisiond.store.store import MARKER, Store
from tests.conftest import SHARED

SAMPLES = SHARED / "contract" / "samples" / "micromamba-real"
STANDIN = Path(__file__).with_name("micromamba_standin.py")
RECORDED_CHANNEL = "file:///srv/mm/channel"  # the channel the samples were recorded against
# What the engine must never pass on: settings inherited from a user's activated shell.
INHERITED = {"CONDA_PREFIX": "/inherited/env", "MAMBA_ROOT_PREFIX": "/inherited/root",
             "CONDA_PKGS_DIRS": "/inherited/pkgs", "MAMBA_EXE": "/inherited/bin/micromamba",
             "CONDA_OVERRIDE_CUDA": "12.4"}

# RattlerEngine() still calls the deprecated rattler.Platform (py-rattler 0.28 warns); only that is let through.
RATTLER_PLATFORM_WARNING = "ignore:`Platform` is deprecated:DeprecationWarning"
pytestmark = [pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"recorded micromamba samples not found at {SAMPLES}"),
              pytest.mark.filterwarnings(RATTLER_PLATFORM_WARNING)]


def sample(name: str) -> Path:
    return SAMPLES / name


class StandIn:
    """The stand-in ``micromamba`` in its own directory, its scenario and what it recorded."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        self.dir = directory
        self.exe = directory / "micromamba"
        self.exe.write_text(f"#!{sys.executable} -I\n" + STANDIN.read_text())
        self.exe.chmod(0o755)
        self.steps: dict[str, dict[str, Any]] = {}
        self.set(version={"stdout": str(sample("01_version.stdout"))},
                 info={"stdout": str(sample("44_info_json.stdout"))})

    def set(self, **steps: dict[str, Any]) -> None:
        self.steps.update(steps)
        (self.dir / "scenario.json").write_text(json.dumps(self.steps))

    def calls(self, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.dir / "calls.jsonl"
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [c for c in calls if kind is None or c["kind"] == kind]

    def hang_pids(self) -> list[int]:
        return list(json.loads((self.dir / "hang.pids").read_text()))


@pytest.fixture
def standin(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path / "mm-bin")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values = {"home": str(tmp_path / "home"), "socket": "/tmp/pvd-unused.sock", **overrides}
    return load_settings(values, environ={}, config_file=tmp_path / "none.toml")


def user_environ(tmp_path: Path, path: str = os.defpath) -> dict[str, str]:
    return {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8", **INHERITED}


@pytest.fixture
def settings(tmp_path: Path, standin: StandIn) -> Settings:
    # micromamba's own install path (the @EXPLICIT `create`): these tests replay it. The default
    # (micromamba_install = rattler) links with rattler, tested on the real binary (test_engines_*.py).
    return make_settings(tmp_path, engine="micromamba", micromamba_path=str(standin.exe), micromamba_install="micromamba")


@pytest.fixture
def engine(settings: Settings, tmp_path: Path) -> MicromambaEngine:
    engine = engine_for(settings, user_environ(tmp_path))
    assert isinstance(engine, MicromambaEngine)
    return engine


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings.paths) as store:
        yield store


def spec_for(channel: str, *deps: str, priority: str = "strict") -> Any:
    lines = ["channels:", f"  - {channel}", f"channel_priority: {priority}", "dependencies:"]
    return parse_spec("\n".join(lines + [f"  - {d}" for d in deps]) + "\n", platform="linux-64")


def replay_solve(standin: StandIn, stdout: Path | str, stderr: str = "", rc: int = 0) -> None:
    out = {"stdout": str(stdout)} if isinstance(stdout, Path) else {"stdout_text": stdout}
    standin.set(solve={**out, "stderr_text": stderr, "rc": rc})


def assert_gone(pids: list[int]) -> None:
    """Each pid has exited (a zombie awaiting its reaper counts): SIGKILL delivery is asynchronous."""
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.02)
    assert not alive, f"still running: {alive}"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def recorded_lock(engine: MicromambaEngine, standin: StandIn) -> Lock:
    replay_solve(standin, sample("02_create_dryrun_json.stdout"))
    return await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"))


async def test_replay_shutdown_during_an_install_kills_micromamba_and_discards_its_prefix(
        engine: MicromambaEngine, standin: StandIn, store: Store, settings: Settings) -> None:
    lock = await recorded_lock(engine, standin)
    standin.set(install={"action": "hang", "half": True})
    builder = Builder(store, engine, settings)
    build = asyncio.create_task(builder.ensure(lock))
    target = settings.paths.prefix(lock.env_key)
    async with asyncio.timeout(60):  # a generous deadline: the stand-in is linking (half a prefix)
        while not (standin.dir / "hang.pids").exists() or not (target / "conda-meta").is_dir():
            await asyncio.sleep(0.02)
    await builder.close()
    with pytest.raises(ShuttingDownError):
        await build
    assert_gone(standin.hang_pids())  # micromamba and what it started, before the cleanup
    assert not target.exists() and list(settings.paths.building.iterdir()) == []
    assert [b.status for b in store.list_builds()] == ["cancelled"]


# -- start-up: finding and probing micromamba ----------------------------------------------------


def test_replay_probe_reports_version_platform_and_virtual_packages(engine: MicromambaEngine) -> None:
    assert engine.version() == "micromamba 2.8.1"
    assert engine.platform == "linux-64" and engine.builds_in_place
    assert engine.virtual_packages() == ["__archspec=1=x86_64_v3", "__glibc=2.36=0", "__linux=6.18.44=0",
                                         "__unix=0=0"]


def test_replay_version_too_old_is_a_config_error(tmp_path: Path, standin: StandIn) -> None:
    standin.set(version={"stdout_text": "1.5.8\n"})
    settings = make_settings(tmp_path, engine="micromamba", micromamba_path=str(standin.exe))
    with pytest.raises(ConfigError, match=r"1.5.8 .* too old: provisiond needs 2.0") as err:
        engine_for(settings, user_environ(tmp_path))
    assert err.value.exit_code == 78
    # auto falls back to the embedded engine when it only found an old micromamba on PATH
    auto = make_settings(tmp_path, engine="auto")
    assert isinstance(engine_for(auto, user_environ(tmp_path, path=str(standin.dir))), RattlerEngine)


def test_replay_a_newer_major_version_runs_with_a_warning(tmp_path: Path, standin: StandIn,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    standin.set(version={"stdout_text": "3.0.0\n"})
    settings = make_settings(tmp_path, engine="micromamba", micromamba_path=str(standin.exe))
    engine = engine_for(settings, user_environ(tmp_path))
    assert engine.version() == "micromamba 3.0.0"
    assert "newer than the 2.x provisiond was tested with (2.8.1)" in caplog.text


def test_missing_configured_micromamba_is_a_config_error(tmp_path: Path) -> None:
    missing = make_settings(tmp_path, engine="auto", micromamba_path=str(tmp_path / "nope" / "micromamba"))
    with pytest.raises(ConfigError, match=r"micromamba_path=.*not an executable file"):
        engine_for(missing, user_environ(tmp_path))
    empty_path = user_environ(tmp_path, path=str(tmp_path))
    del empty_path["MAMBA_EXE"]
    with pytest.raises(ConfigError, match="no micromamba was found") as err:
        engine_for(make_settings(tmp_path, engine="micromamba"), empty_path)
    assert err.value.exit_code == 78
    assert isinstance(engine_for(make_settings(tmp_path, engine="auto"), empty_path), RattlerEngine)


def test_daemon_exits_78_when_the_configured_micromamba_is_missing(
        tmp_path: Path, short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisiond.daemon import main as daemon

    monkeypatch.setenv("PROVISIOND_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("PROVISIOND_MICROMAMBA_PATH", str(tmp_path / "missing"))
    argv = ["--home", str(tmp_path / "home"), "--socket", str(short_dir / "d.sock"), "--engine", "micromamba"]
    assert daemon.main(argv) == 78


def test_replay_auto_finds_micromamba_on_path_or_mamba_exe(tmp_path: Path, standin: StandIn) -> None:
    auto = make_settings(tmp_path, engine="auto")
    on_path = engine_for(auto, {**user_environ(tmp_path, path=str(standin.dir)), "MAMBA_EXE": ""})
    assert isinstance(on_path, MicromambaEngine) and on_path.exe == standin.exe
    by_mamba_exe = engine_for(auto, {**user_environ(tmp_path, path=str(tmp_path)), "MAMBA_EXE": str(standin.exe)})
    assert isinstance(by_mamba_exe, MicromambaEngine) and by_mamba_exe.exe == standin.exe
    calls = len(standin.calls())
    assert isinstance(engine_for(make_settings(tmp_path, engine="rattler"), user_environ(tmp_path)), RattlerEngine)
    assert len(standin.calls()) == calls  # rattler never runs micromamba


# -- solve ------------------------------------------------------------------------------------


async def test_replay_solve_parses_the_real_dry_run_into_a_lock(engine: MicromambaEngine, standin: StandIn) -> None:
    lock = await recorded_lock(engine, standin)
    assert lock.engine == "micromamba" and lock.platform == "linux-64"
    assert lock.channels == (RECORDED_CHANNEL + "/",)
    pkga, pkgb = lock.packages
    assert (pkga.name, pkga.version, pkga.build, pkga.build_number) == ("pkga", "1.0", "h1234_0", 0)
    assert pkga.url == f"{RECORDED_CHANNEL}/linux-64/pkga-1.0-h1234_0.tar.bz2"
    assert (pkga.channel, pkga.subdir, pkga.file_name) == (RECORDED_CHANNEL + "/", "linux-64", "pkga-1.0-h1234_0.tar.bz2")
    assert pkga.sha256 == "f6bc77fe1433709959af675744dd042a894443385a1a5761c1bafc99bf9b56d1"
    assert pkga.md5 == "db286f640bd5f5262acb5baec8d0ad41" and pkga.size == 741
    assert pkga.depends == ("pkgb >=1.0",) and pkga.constrains == () and pkga.noarch is None
    assert pkga.timestamp == 1_700_000_000_000  # micromamba prints seconds; locks hold repodata's milliseconds
    assert pkga.license == "BSD-3-Clause"
    assert (pkgb.name, pkgb.version, pkgb.subdir, pkgb.noarch) == ("pkgb", "2.0", "noarch", "generic")
    assert not (engine.root / "solve").exists() or not any((engine.root / "solve").iterdir())


async def test_replay_solve_matches_rattler_on_the_recorded_channel(
        engine: MicromambaEngine, standin: StandIn, tmp_path: Path) -> None:
    """Same channel, same spec: micromamba's recorded answer and rattler's give one Lock and env_key."""
    if engine.platform != str(RattlerEngine(make_settings(tmp_path, engine="rattler")).platform):
        pytest.skip("the recording is of a linux-64 channel")
    channel = tmp_path / "channel"
    for subdir in ("linux-64", "noarch"):
        (channel / subdir).mkdir(parents=True)
        shutil.copy(SAMPLES / "artifacts" / "channel" / f"{subdir}_repodata.json", channel / subdir / "repodata.json")
    uri = channel.as_uri()
    standin.set(solve={"stdout": str(sample("02_create_dryrun_json.stdout")), "replace": {RECORDED_CHANNEL: uri}})
    ours = await engine.solve(spec_for(uri, "pkga"))
    theirs = await RattlerEngine(make_settings(tmp_path, engine="rattler")).solve(spec_for(uri, "pkga"))
    assert ours.packages == theirs.packages
    assert ours.env_key == theirs.env_key and ours.channels == theirs.channels


async def test_replay_solve_reads_the_newer_json_shape(
        engine: MicromambaEngine, standin: StandIn, tmp_path: Path) -> None:
    """After 2.8.1 (contract §2.4, PR #4202) the document gains ``log_history``; the records are the same."""
    doc = json.loads(sample("02_create_dryrun_json.stdout").read_text())
    doc["log_history"] = [{"level": "warning", "message": "Security Warning: ...", "source": "libmamba"}]
    del doc["actions"]["FETCH"]  # all cached: FETCH is omitted when empty
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(doc, indent=4))
    replay_solve(standin, newer)
    lock = await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"))
    assert lock == await recorded_lock(engine, standin)


async def test_replay_solve_passes_isolating_flags_and_a_scrubbed_environment(
        engine: MicromambaEngine, standin: StandIn, settings: Settings) -> None:
    await recorded_lock(engine, standin)
    (call,) = standin.calls("solve")
    argv, env = call["argv"], call["env"]
    assert argv[:2] == ["create", "--dry-run"]
    for flag in ("--json", "-y", "--no-rc", "--override-channels"):
        assert flag in argv
    assert "--no-env" not in argv  # it would silently disable CONDA_PKGS_DIRS (contract §2.1)
    root = settings.paths.home / "mamba-root"
    assert argv[argv.index("-r") + 1] == str(root)
    assert Path(argv[argv.index("-p") + 1]).parent == root / "solve"  # a fresh scratch prefix
    assert argv[argv.index("-c") + 1] == RECORDED_CHANNEL
    assert argv[argv.index("--channel-priority") + 1] == "strict"
    assert argv[argv.index("--platform") + 1] == "linux-64"
    assert argv[argv.index("--log-level") + 1] == "error"  # 2.8.1 --json hides the solver's explanation
    assert argv[-1] == "pkga" and "--repodata-ttl" not in argv
    assert env["CONDA_PKGS_DIRS"] == str(settings.paths.pkgs)
    assert env["MAMBA_ROOT_PREFIX"] == str(root)
    assert "CONDA_PREFIX" not in env and "MAMBA_EXE" not in env
    assert env["CONDA_OVERRIDE_CUDA"] == "12.4"  # a user's virtual-package override is kept
    assert env["MAMBA_REMOTE_CONNECT_TIMEOUT_SECS"] == "10"  # the connect_timeout setting
    assert call["stdin"] == "/dev/null"
    for probe in standin.calls("version") + standin.calls("info"):
        assert "CONDA_PREFIX" not in probe["env"] and probe["stdin"] == "/dev/null"

    await engine.solve(spec_for(RECORDED_CHANNEL, "pkga", priority="flexible"), refresh=True)
    argv = standin.calls("solve")[-1]["argv"]
    assert argv[argv.index("--channel-priority") + 1] == "disabled"  # rattler's flexible: best version across channels
    assert argv[argv.index("--repodata-ttl") + 1] == "0"

    # The solve TTL: repodata cached longer than solve_ttl is fetched again.
    await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"), max_age=600)
    argv = standin.calls("solve")[-1]["argv"]
    assert argv[argv.index("--repodata-ttl") + 1] == "600"
    await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"), max_age=0)
    argv = standin.calls("solve")[-1]["argv"]
    assert argv[argv.index("--repodata-ttl") + 1] == "0"


async def test_replay_unsolvable_lists_the_solver_problems(engine: MicromambaEngine, standin: StandIn) -> None:
    replay_solve(standin, sample("31_unsolvable_conflict_json.stdout"),
                 sample("31_unsolvable_conflict_json.stderr").read_text(), rc=1)
    with pytest.raises(SolveError, match="cannot be solved") as err:
        await engine.solve(spec_for(RECORDED_CHANNEL, "pkga", "pkgd"))
    assert "nothing provides pkgb <1.0 needed by pkgd-1.0-0" in err.value.message


async def test_replay_unsolvable_shows_the_explanation_from_stderr(engine: MicromambaEngine, standin: StandIn) -> None:
    """With ``--log-level error`` 2.8.1 prints the tree of the text run (36) beside the JSON (33), §2.3."""
    replay_solve(standin, sample("33_unsolvable_nopkg_json.stdout"),
                 sample("36_unsolvable_nopkg_text.stderr").read_text(), rc=1)
    with pytest.raises(SolveError) as err:
        await engine.solve(spec_for(RECORDED_CHANNEL, "nosuchpkg"))
    assert "└─ nosuchpkg =* * does not exist (perhaps a typo or a missing channel)." in err.value.message
    assert "unsupported request" not in err.value.message  # libsolv's non-answer, when a tree says more


async def test_replay_unsolvable_in_the_newer_shape_reads_log_history(
        engine: MicromambaEngine, standin: StandIn) -> None:
    """Newer releases log nothing on stderr under --json; errors move into ``log_history`` (§2.3)."""
    tree = sample("38_unsolvable_missingdep_text.stderr").read_text().splitlines()
    doc = {"log_history": [{"level": "error", "message": "\n".join([tree[0].split(None, 2)[2], *tree[1:-1]]),
                            "source": "libmamba"},
                           {"level": "critical", "message": "Could not solve for environment specs", "source": "libmamba"}],
           "solver_problems": ["nothing provides doesnotexist >=1 needed by pkge-1.0-0"], "success": False}
    replay_solve(standin, json.dumps(doc, indent=4), rc=1)
    with pytest.raises(SolveError) as err:
        await engine.solve(spec_for(RECORDED_CHANNEL, "pkge"))
    assert "└─ doesnotexist >=1 *, which does not exist (perhaps a missing channel)." in err.value.message
    assert "problem: nothing provides doesnotexist >=1 needed by pkge-1.0-0" in err.value.message


async def test_replay_usage_error_is_an_engine_error(engine: MicromambaEngine, standin: StandIn) -> None:
    """A CLI11 usage error (real sample 15: exit 108, no JSON) is not 'unsolvable'."""
    replay_solve(standin, "", sample("15_shell_activate_bash_with_r_cli_error.stderr").read_text(), rc=108)
    with pytest.raises(EngineError, match=r"micromamba solve failed \(exit 108\)") as err:
        await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"))
    assert "--prefix excludes prefix_or_name" in err.value.message


async def test_replay_a_channel_timeout_is_channel_timeout(engine: MicromambaEngine, standin: StandIn) -> None:
    """libmamba's own limit on a channel that accepts and never answers (real 2.8.1 output, 120 s)."""
    stderr = ("critical libmamba Multiple errors occurred:\n"
              f"    Download error (28) Timeout was reached [{RECORDED_CHANNEL}/noarch/repodata.json]\n"
              "    Operation too slow. Less than 30 bytes/sec transferred the last 60 seconds\n"
              f"    Subdir {RECORDED_CHANNEL}/noarch not loaded!\n")
    replay_solve(standin, "", stderr, rc=1)
    with pytest.raises(ChannelTimeoutError, match=r"micromamba solve failed \(exit 1\)") as err:
        await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"))
    assert "a channel did not answer in time" in err.value.message and "Operation too slow" in err.value.message


# -- install ------------------------------------------------------------------------------------


async def test_replay_install_builds_in_place_and_publishes_with_the_marker_last(
        engine: MicromambaEngine, standin: StandIn, store: Store, settings: Settings) -> None:
    lock = await recorded_lock(engine, standin)
    standin.set(install={"action": "create", "stdout": str(sample("47_create_explicit_from_export.stdout")),
                         "replace": {"/srv/mm/envs/x": "@PREFIX@"}})
    prefix = await Builder(store, engine, settings).ensure(lock)
    assert prefix == settings.paths.prefix(lock.env_key) and store.find_env(lock.env_key) == prefix
    assert json.loads((prefix / MARKER).read_text())["env_key"] == lock.env_key
    (call,) = standin.calls("install")
    argv = call["argv"]
    assert argv[0] == "create" and "--dry-run" not in argv and "-y" in argv and "--json" in argv
    assert argv[argv.index("-p") + 1] == str(prefix) and "--offline" not in argv  # nothing cached yet
    assert call["env"]["CONDA_PKGS_DIRS"] == str(settings.paths.pkgs) and "CONDA_PREFIX" not in call["env"]
    explicit = call["explicit"].splitlines()
    assert explicit[explicit.index("@EXPLICIT") + 1:] == [f"{p.url}#sha256:{p.sha256}" for p in lock.packages]
    assert list(settings.paths.building.iterdir()) == []  # the explicit file's dir is gone
    build = store.list_builds()[0]
    assert build.status == "succeeded"
    assert "linked pkga-1.0-h1234_0 (linux-64)" in Path(build.log).read_text()


async def test_replay_install_goes_offline_when_every_package_is_cached(
        engine: MicromambaEngine, standin: StandIn, settings: Settings, tmp_path: Path) -> None:
    lock = await recorded_lock(engine, standin)
    for p in lock.packages:  # micromamba's own cache layout for file:// packages (samples/…/env_a)
        stem = p.file_name.removesuffix(".tar.bz2")
        record = settings.paths.pkgs / "file" / p.url.removeprefix("file:///").rsplit("/", 1)[0] / stem / "info"
        record.mkdir(parents=True)
        (record / "repodata_record.json").write_text("{}")
    standin.set(install={"action": "create", "stdout": str(sample("47_create_explicit_from_export.stdout"))})
    lines: list[str] = []
    await engine.install(lock, tmp_path, settings.paths.prefix(lock.env_key), lines.append)
    assert "--offline" in standin.calls("install")[0]["argv"]
    assert any("offline: all cached" in line for line in lines)


@pytest.mark.parametrize("how", ["exit", "signal"])
async def test_replay_crash_mid_install_leaves_no_env_that_looks_complete(
        engine: MicromambaEngine, standin: StandIn, store: Store, settings: Settings, how: str) -> None:
    lock = await recorded_lock(engine, standin)
    stderr = ("error    libmamba Error when extracting package: archive is truncated\n"
              "critical libmamba Aborting.\n")
    crash = {"signal": signal.SIGKILL} if how == "signal" else {"rc": 1}
    standin.set(install={"action": "crash", "stderr_text": stderr, **crash})
    with pytest.raises(EngineError) as err:
        await Builder(store, engine, settings).ensure(lock)
    exit_text = "killed by SIGKILL" if how == "signal" else "exit 1"
    assert f"micromamba install into {settings.paths.prefix(lock.env_key)} failed ({exit_text})" in err.value.message
    assert "critical libmamba Aborting." in err.value.message
    build = store.list_builds()[0]
    assert err.value.hint == f"see the build log: {build.log}" and build.status == "failed"
    assert "error    libmamba Error when extracting package" in Path(build.log).read_text()
    target = settings.paths.prefix(lock.env_key)
    assert not target.exists() and store.find_env(lock.env_key) is None  # half a prefix, removed
    assert list(settings.paths.building.iterdir()) == []


async def test_replay_install_refuses_to_let_create_replace_an_existing_prefix(
        engine: MicromambaEngine, standin: StandIn, tmp_path: Path) -> None:
    lock = await recorded_lock(engine, standin)
    target = tmp_path / "existing"
    (target / "conda-meta").mkdir(parents=True)
    with pytest.raises(EngineError, match="already exists and is not empty"):
        await engine.install(lock, tmp_path, target, lambda line: None)
    assert standin.calls("install") == [] and (target / "conda-meta").is_dir()


# -- process handling: timeouts, cancellation, process groups ---------------------------------


async def test_replay_hang_past_the_timeout_kills_the_process_group(
        settings: Settings, standin: StandIn, tmp_path: Path) -> None:
    engine = MicromambaEngine(settings, standin.exe, environ=user_environ(tmp_path), solve_timeout=3)
    standin.set(solve={"action": "hang"})
    with pytest.raises(ChannelTimeoutError, match=r"micromamba solve timed out after 3s") as err:
        await engine.solve(spec_for(RECORDED_CHANNEL, "pkga"))
    assert RECORDED_CHANNEL in err.value.message and "solve_timeout" in (err.value.hint or "")
    assert_gone(standin.hang_pids())  # the child and the grandchild it started


async def test_replay_cancelling_an_install_kills_micromamba(
        engine: MicromambaEngine, standin: StandIn, tmp_path: Path) -> None:
    lock = await recorded_lock(engine, standin)
    standin.set(install={"action": "hang"})
    ready = asyncio.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            ready.set()

    task = asyncio.create_task(engine.install(lock, tmp_path, tmp_path / "env", on_line))
    async with asyncio.timeout(30):
        await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(standin.hang_pids())


async def test_replay_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
        standin: StandIn, tmp_path: Path) -> None:
    standin.set(other={"action": "hang", "ignore_term": True})
    ready = asyncio.Event()
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "ready":
            ready.set()

    task = asyncio.create_task(run_process([str(standin.exe), "hang"], on_line=on_line, timeout=60,
                                           env=user_environ(tmp_path), grace=0.2))
    async with asyncio.timeout(30):
        await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(standin.hang_pids())
    assert lines == ["ready"]


async def test_run_process_merges_output_line_by_line(tmp_path: Path) -> None:
    lines: list[str] = []
    script = "echo one; echo two >&2; printf 'step 1\\rstep 2\\n'; printf 'no newline'; exit 3"
    result = await run_process(["sh", "-c", script], on_line=lines.append, timeout=30, env={"PATH": os.defpath},
                               cwd=tmp_path)
    assert lines == ["one", "two", "step 2", "no newline"]
    assert result.returncode == 3 and result.output_tail == tuple(lines) and result.stdout == ""
    assert result.describe_exit() == "exit 3"


async def test_run_process_captures_stdout_apart_from_the_streamed_log() -> None:
    lines: list[str] = []
    result = await run_process(["sh", "-c", "echo '{\"a\": 1}'; echo log >&2"], on_line=lines.append,
                               timeout=30, env={"PATH": os.defpath}, capture_stdout=True)
    assert json.loads(result.stdout) == {"a": 1} and lines == ["log"]


async def test_run_process_cannot_start_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot start"):
        await run_process([str(tmp_path / "missing")], on_line=print, timeout=5, env={}, step="probe")
