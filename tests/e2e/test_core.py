"""End to end: a real daemon on a real socket, driven by provisionctl, building from a real channel."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisiond.store.store import MARKER
from provisiond.testing.channel import PLACEHOLDER, build_channel, generated_packages
from tests.conftest import Daemon, serve_directory, write_project


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


def test_watch_warm_builds_a_working_env(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "nlp", channel, ["hello"], name="nlp-exp")
    code, out, err = daemon.ctl("watch", str(project), "--no-warm")
    assert code == 0, err
    assert "nlp-exp" in out

    code, out, err = daemon.ctl("warm", "nlp-exp", "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["status"] == "ready" and view["name"] == "nlp-exp"
    prefix = Path(view["prefix"])
    assert prefix.parent == daemon.home / "envs" and prefix.name == view["env_key"][:16]
    # hello 2.0 (the newest) runs and prints the final prefix baked in by text-placeholder replacement.
    run = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"Hello 2.0 from {prefix}"
    script = (prefix / "bin" / "hello").read_text()
    assert str(prefix) in script and ".building" not in script and PLACEHOLDER not in script
    binary = (prefix / "lib" / "hello.bin").read_bytes()
    assert f"{prefix}/lib".encode() + b"\0" in binary and b".building" not in binary
    assert (daemon.home / "locks" / f"{view['env_key']}.json").is_file()
    assert not any((daemon.home / "envs" / ".building").iterdir())

    code, out, _ = daemon.ctl("warm", "nlp-exp")
    assert code == 0 and out.strip() == str(prefix)  # text mode prints just the prefix

    code, out, _ = daemon.ctl("list", "--json")
    [listed] = json.loads(out)["envs"]
    assert listed["env_key"] == view["env_key"] and listed["projects"] == [str(project)]


def test_warm_by_path_registers_the_project(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "by-path", channel, ["tool-a"])
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["name"] == "by-path" and view["status"] == "ready"
    assert (Path(view["prefix"]) / "bin" / "tool-a").exists()


def test_same_resolution_shares_one_prefix_and_costs_no_build(daemon: Daemon, channel: Path,
                                                              tmp_path: Path) -> None:
    a = write_project(tmp_path / "a", channel, ["hello", "greet-data"], name="team-a")
    b = tmp_path / "b"
    b.mkdir()
    # Differs only in name and comments (and dependency order).
    (b / "environment.yml").write_text(
        f"# the same env, another team\nname: team-b\nchannels:\n  - {channel.as_uri()}  # local\n"
        "dependencies:\n  - greet-data\n  - hello   # newest\n")
    code, out, err = daemon.ctl("warm", str(a), "--json")
    assert code == 0, err
    first = json.loads(out)
    store_files = files_under(daemon.home / "envs") | files_under(daemon.home / "pkgs")

    code, out, err = daemon.ctl("warm", str(b), "--json")
    assert code == 0, err
    second = json.loads(out)
    assert second["env_key"] == first["env_key"] and second["prefix"] == first["prefix"]
    assert files_under(daemon.home / "envs") | files_under(daemon.home / "pkgs") == store_files
    builds = daemon.client.get("/v1/builds")["builds"]
    assert len(builds) == 1
    assert sorted(second["projects"]) == sorted([str(a), str(b)])


def test_twenty_concurrent_warms_make_one_build(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    write_project(tmp_path / "conc", channel, ["hello", "tool-a", "greet-data"], name="conc")
    daemon.ctl("watch", str(tmp_path / "conc"), "--no-warm")
    results: list[dict] = []
    errors: list[BaseException] = []

    def warm() -> None:
        try:
            results.append(daemon.client.post("/v1/envs/conc/warm"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=warm) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20 and {r["status"] for r in results} == {"ready"}
    assert len({r["prefix"] for r in results}) == 1
    assert len(daemon.client.get("/v1/builds")["builds"]) == 1


def test_broken_file_reports_position_and_keeps_previous_env(daemon: Daemon, channel: Path,
                                                              tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", channel, ["hello"], name="keep")
    code, out, _ = daemon.ctl("warm", str(project), "--json")
    good = json.loads(out)
    (project / "environment.yml").write_text(
        f"name: keep\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - hello\n  - tool-a >=>1\n")

    code, out, err = daemon.ctl("warm", "keep")
    assert code == 65
    assert "environment.yml:6:5: " in err
    assert "Traceback" not in err
    assert daemon.client.get("/v1/health")["status"] == "ok"
    code, out, _ = daemon.ctl("show", "keep", "--json")
    shown = json.loads(out)
    assert shown["status"] == "failed" and "environment.yml:6:5" in shown["error"]
    assert shown["prefix"] == good["prefix"] and Path(shown["prefix"], "bin", "hello").exists()

    # Fixing the file recovers without a restart.
    (project / "environment.yml").write_text(
        f"name: keep\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - hello\n  - tool-a\n")
    code, out, err = daemon.ctl("warm", "keep", "--json")
    assert code == 0, err
    assert json.loads(out)["env_key"] != good["env_key"]


def test_unsolvable_spec_is_a_clear_error(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "u", channel, ["hello >=9"], name="nine")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 65
    assert json.loads(out)["error"]["code"] == "unsolvable"
    assert "hello" in err and "Traceback" not in err


def test_create_from_file_with_a_name(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    write_project(tmp_path / "other", channel, ["hello ==1.0"], name="ignored")
    code, out, err = daemon.ctl("create", "-f", str(tmp_path / "other" / "environment.yml"), "-n", "tools", "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["name"] == "tools" and view["kind"] == "file"
    run = subprocess.run([Path(view["prefix"]) / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("Hello 1.0 from ")
    code, out, _ = daemon.ctl("show", "tools", "--lock", "--json")
    names = {p["name"] for p in json.loads(out)["lock"]["packages"]}
    assert names == {"hello", "libgreet"}


@pytest.fixture(scope="session")
def big_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_channel(tmp_path_factory.mktemp("big-channel"), generated_packages(100, 50))


def test_kill_9_during_a_build_leaves_no_partial_env(daemon: Daemon, tmp_path: Path, big_channel: Path) -> None:
    deps = [f"gen-{i:04d}" for i in range(100)]
    project = write_project(tmp_path / "big", big_channel, deps, name="big")
    daemon.ctl("watch", str(project), "--no-warm")
    warm = subprocess.Popen([sys.executable, "-m", "provisiond.cli", "--socket", str(daemon.socket), "warm", "big"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    building = daemon.home / "envs" / ".building"
    deadline = time.monotonic() + 60
    while not (building.exists() and any(building.iterdir())):
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.001)
    killed_pid = daemon.proc.pid
    daemon.stop(signal.SIGKILL)
    warm.communicate(timeout=30)
    assert warm.returncode != 0  # the client saw the daemon die

    daemon.start()
    published = [p for p in (daemon.home / "envs").iterdir() if p.name != ".building"]
    for prefix in published:  # anything visible is complete
        assert (prefix / MARKER).exists()
    # The start-up sweep removed the killed build (the new daemon may have begun its own).
    assert not [b for b in building.iterdir() if f"-{killed_pid}-" in b.name]
    builds = daemon.client.get("/v1/builds")["builds"]
    assert builds[-1]["status"] in ("interrupted", "succeeded")
    code, out, err = daemon.ctl("warm", "big", "--json")
    assert code == 0, err
    prefix = Path(json.loads(out)["prefix"])
    assert subprocess.run([prefix / "bin" / "gen-0099"], capture_output=True).returncode == 0 or \
        (prefix / "conda-meta").is_dir()


def test_api_errors_are_json_with_a_stable_code(daemon: Daemon) -> None:
    raw = daemon.raw

    assert raw("GET", "/v1/envs/nope") == (404, {"error": {
        "code": "env-not-found", "message": "no env named 'nope'", "hint": "see: provisionctl list"}})
    status, body = raw("POST", "/v1/envs", b"{not json")
    assert status == 400 and body["error"]["code"] == "bad-request"
    status, body = raw("POST", "/v1/envs", b'{"file": 3}')
    assert status == 400 and body["error"]["code"] == "bad-request"
    status, body = raw("GET", "/v1/nothing-here")
    assert status == 404 and body["error"]["code"] == "not-found"
    status, body = raw("GET", "/v1/builds/abc")
    assert status == 400
    status, body = raw("POST", "/v1/envs", json.dumps({"file": "/no/such/environment.yml"}).encode())
    assert status == 400 and body["error"]["code"] == "invalid-spec"


def test_socket_is_private(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700 or daemon.socket.parent.name.startswith("pvd-")


def test_one_daemon_per_store(daemon: Daemon, short_dir: Path) -> None:
    second = subprocess.run([sys.executable, "-m", "provisiond", "--home", str(daemon.home),
                             "--socket", str(short_dir / "other.sock")], capture_output=True, text=True, timeout=60)
    assert second.returncode == os.EX_TEMPFAIL
    assert "already serves the store" in second.stderr and "Traceback" not in second.stderr
    assert daemon.client.get("/v1/health")["status"] == "ok"


def test_status_names_engine_and_store(daemon: Daemon) -> None:
    code, out, err = daemon.ctl("status")
    assert code == 0, err
    expected = {"rattler": "engine: py-rattler ", "micromamba": "engine: micromamba 2."}[str(daemon.engine)]
    assert expected in out and str(daemon.home) in out


def test_daemon_not_running_is_one_clear_line(short_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "provisiond.cli", "--socket", str(short_dir / "none.sock"), "list"],
                          capture_output=True, text=True)
    assert proc.returncode == os.EX_UNAVAILABLE
    assert proc.stderr.splitlines()[0].startswith("provisionctl: provisiond is not running")
    assert "Traceback" not in proc.stderr


def test_sigterm_shuts_down_cleanly_and_removes_the_socket(daemon: Daemon) -> None:
    assert daemon.stop(signal.SIGTERM) == 0
    assert not daemon.socket.exists()
    assert daemon.start().stop(signal.SIGINT) == 0


def test_provisionctl_does_not_import_heavy_modules(daemon: Daemon) -> None:
    code = (
        "import sys\n"
        "from provisiond.cli import commands as cli\n"
        f"assert cli.main(['--socket', {str(daemon.socket)!r}, 'list', '--json']) == 0\n"
        "heavy = [m for m in ('aiohttp', 'ruamel', 'rattler', 'watchfiles') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def http_channel(channel: Path):
    """The local channel served over real HTTP on the loopback interface."""
    with serve_directory(channel) as url:
        yield url


def test_http_channel(daemon: Daemon, http_channel: str, tmp_path: Path) -> None:
    project = tmp_path / "web"
    project.mkdir()
    (project / "environment.yml").write_text(
        f"name: web\nchannels:\n  - {http_channel}\ndependencies:\n  - hello\n  - greet-data\n")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    view = json.loads(out)
    run = subprocess.run([Path(view["prefix"]) / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"Hello 2.0 from {view['prefix']}"
    code, out, _ = daemon.ctl("show", "web", "--lock", "--json")
    assert all(p["url"].startswith(http_channel) for p in json.loads(out)["lock"]["packages"])


def test_the_warm_fast_path(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    """`provisionctl warm NAME` of a ready env: one raw request, no heavy imports; else the full CLI."""
    project = write_project(tmp_path / "fast", channel, ["hello"], name="fast")
    daemon.ctl("watch", str(project), "--no-warm")
    ctl = [sys.executable, "-m", "provisiond.ctl", "--socket", str(daemon.socket), "warm"]
    # Not built yet: the fast path hands over to cli.main, which builds.
    first = subprocess.run([*ctl, "fast"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    prefix = first.stdout.strip()
    assert Path(prefix, "bin", "hello").exists()
    builds = len(daemon.client.get("/v1/builds")["builds"])

    probe = (
        "import sys\n"
        "from provisiond.cli import entry as ctl\n"
        f"assert ctl._fast_warm(['--socket', {str(daemon.socket)!r}, 'warm', 'fast']) == 0\n"
        "heavy = [m for m in ('argparse', 'json', 'socket', 'pathlib', 'provisiond.cli.commands', 'aiohttp', 'rattler')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout.strip() == prefix
    assert len(daemon.client.get("/v1/builds")["builds"]) == builds

    # An edit makes the env stale: the fast path declines and the full warm rebuilds.
    (project / "environment.yml").write_text(
        f"name: fast\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - hello ==1.0\n")
    again = subprocess.run([*ctl, "fast"], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() != prefix

    unknown = subprocess.run([*ctl, "nope"], capture_output=True, text=True)
    assert unknown.returncode == os.EX_NOINPUT and "no env or project 'nope'" in unknown.stderr


def test_odd_input_gets_a_4xx_never_a_500(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    """Inputs found in review that used to end in 500 or hang the daemon."""
    raw = daemon.raw
    project = write_project(tmp_path / "p", channel, ["hello"], name="p1")
    daemon.ctl("warm", str(project))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    bad_lock = tmp_path / "bad-lock.yml"
    bad_lock.write_text("version: 1\nmetadata: [1, 2]\npackage: []\n")
    bad_hash = tmp_path / "hash-lock.yml"
    bad_hash.write_text("version: 1\nmetadata: {platforms: [linux-64]}\npackage:\n- name: a\n  manager: conda\n"
                        "  platform: linux-64\n  url: https://x.org/c/linux-64/a-1-0.conda\n  hash: {sha256: nothex}\n")
    cases = [
        ("POST", "/v1/projects", {"path": "\u0000"}),
        ("POST", "/v1/envs", {"file": str(tmp_path) + "\u0000"}),
        ("POST", "/v1/envs", {"file": str(fifo), "name": "f"}),
        ("POST", "/v1/envs", {"file": str(bad_lock), "name": "l"}),
        ("POST", "/v1/envs", {"file": str(bad_hash), "name": "h"}),
        ("DELETE", "/v1/projects?project=%00/x", None),
        ("GET", "/v1/builds/99999999999999999999999", None),
        ("POST", "/v1/envs/p1/clone", {"target": "x" * 300}),
        ("POST", "/v1/envs/p1/clone", {"target": ".."}),
        ("POST", "/v1/envs/p1/warm", {"update": "no"}),
        ("POST", "/v1/gc", {"older_than_days": float("nan")}),
        ("POST", "/v1/gc", {"older_than_days": True}),
    ]
    for method, path, body in cases:
        status, answer = raw(method, path, body)
        assert 400 <= status < 500 and answer["error"]["code"], (method, path, status, answer)
    assert daemon.client.get("/v1/health")["status"] == "ok"
    assert daemon.ctl("warm", "")[0] == os.EX_USAGE  # an empty name: no such route


def test_a_socket_in_use_is_not_taken_over(daemon: Daemon, tmp_path: Path) -> None:
    other = subprocess.run([sys.executable, "-m", "provisiond", "--home", str(tmp_path / "other"),
                            "--socket", str(daemon.socket)], capture_output=True, text=True, timeout=60)
    assert other.returncode == os.EX_CONFIG and "in use by another provisiond" in other.stderr
    assert daemon.client.get("/v1/health")["store"] == str(daemon.home)


def test_watch_again_with_another_name_renames_the_project(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "r", channel, ["hello"], name="first")
    assert daemon.ctl("watch", str(project), "--no-warm")[0] == 0
    code, _out, err = daemon.ctl("watch", str(project), "-n", "second", "--no-warm", "--json")
    assert code == 0, err
    names = [(e["name"], e["source"]) for e in daemon.client.get("/v1/envs")["envs"]]
    assert names == [("second", str(project))]
    assert daemon.ctl("watch", str(project), "-n", "bad name")[0] == 64
