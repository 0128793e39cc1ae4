"""Signals on a real daemon process: SIGHUP reloads the config and reopens the log file; SIGTERM
during a build answers the waiting clients 503 `shutting-down` and leaves every name as it was."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, serve_directory


class ConfiguredDaemon(Daemon):
    """A daemon that reads its settings from ``config`` (a real TOML file the test edits)."""

    def __init__(self, home: Path, socket: Path, config: Path) -> None:
        super().__init__(home, socket, engine=None)  # the engine comes from the config file it tests
        self.config = config

    def environ(self) -> dict[str, str]:
        return {**super().environ(), "PROVISIOND_CONFIG": str(self.config)}


def eventually(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``probe`` until it returns something truthy (a generous deadline, not a timing claim)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_sighup_reloads_the_config_and_reopens_the_log(tmp_path: Path, short_dir: Path) -> None:
    log_file = tmp_path / "logs" / "provisiond.log"
    log_file.parent.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'gc_days = 30\nmax_builds = 2\nlog_file = "{log_file}"\n')
    daemon = ConfiguredDaemon(tmp_path / "home", short_dir / "d.sock", config).start()
    try:
        status = daemon.client.get("/v1/status")
        assert status["settings"]["gc_days"] == 30 and status["settings"]["log_file"] == str(log_file)
        pid = status["pid"]
        assert "listening on" in read(log_file)
        assert "listening on" not in read(daemon.log)  # a log file replaces stderr

        # logrotate: rename the file, then HUP. A changed value applies; the engine needs a restart.
        rotated = log_file.with_name("provisiond.log.1")
        log_file.rename(rotated)
        config.write_text(f'gc_days = 7\nmax_builds = 3\nlog_file = "{log_file}"\nengine = "micromamba"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        settings = eventually("gc_days=7 applied",
                              lambda: (s := daemon.client.get("/v1/status")["settings"])["gc_days"] == 7 and s)
        assert settings["max_builds"] == 3 and settings["engine"] == "auto"
        assert daemon.client.get("/v1/status")["pid"] == pid
        new_log = eventually("new lines in a new file at the original path",
                             lambda: "reloaded settings" in read(log_file) and read(log_file))
        assert "gc_days 30.0 -> 7.0" in new_log and "max_builds 2 -> 3" in new_log
        assert "WARNING" in new_log and "engine changed (auto -> micromamba); it needs a restart" in new_log
        assert "listening on" in read(rotated) and "reloaded settings" not in read(rotated)

        # A broken file is an ERROR in the log; the daemon stays up with the settings it had.
        config.write_text("gc_days = [\n")
        daemon.proc.send_signal(signal.SIGHUP)
        line = eventually("the reload error logged",
                          lambda: [x for x in read(log_file).splitlines() if "reload failed" in x])
        assert "ERROR" in line[0] and str(config) in line[0]
        assert daemon.proc.poll() is None
        assert daemon.client.get("/v1/status")["settings"]["gc_days"] == 7
        assert daemon.client.get("/v1/health")["status"] == "ok"
    finally:
        code = daemon.stop()
    assert code == 0, read(log_file) + read(daemon.log)


def test_sigterm_during_builds_answers_503_and_names_keep_their_state(
        daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    hold, release = threading.Event(), threading.Event()
    held: list[str] = []

    def before_get(path: str) -> None:
        """While ``hold`` is set, package downloads stall until the test releases them."""
        if hold.is_set() and path.endswith((".conda", ".tar.bz2")):
            held.append(path)
            release.wait(120)

    with serve_directory(channel, before_get) as url:
        def env_file(name: str, dep: str) -> Path:
            path = tmp_path / f"{name}.yml"
            path.write_text(f"name: {name}\nchannels:\n  - {url}\ndependencies:\n  - {dep}\n")
            return path

        keep_file = env_file("keep", "hello ==1.0")
        code, out, err = daemon.ctl("create", "-f", str(keep_file), "--json")
        assert code == 0, err
        ready = json.loads(out)
        assert ready["status"] == "ready"

        # Two builds that cannot finish while downloads stall: an edit of a ready env, and a new env.
        hold.set()
        env_file("keep", "hello ==2.0")
        answers: dict[str, tuple[int, dict] | BaseException] = {}
        requests = {
            "keep": ("POST", "/v1/envs/keep/warm", {}),
            "fresh": ("POST", "/v1/envs", {"file": str(env_file("fresh", "tool-a")), "name": "fresh"}),
        }

        def ask(name: str) -> None:
            try:
                answers[name] = daemon.raw(*requests[name])
            except BaseException as exc:
                answers[name] = exc

        threads = [threading.Thread(target=ask, args=(name,)) for name in requests]
        try:
            for t in threads:
                t.start()
            # rattler queues one install's download behind the other's (either order): once one is
            # held and both builds run, neither can finish until the test releases the download.
            eventually("a download stalled, two builds running",
                       lambda: held and len(daemon.client.get("/v1/status")["builds_running"]) == 2)
            building = eventually("the build of keep started",
                                  lambda: (v := daemon.client.get("/v1/envs/keep"))["build_id"] != ready["build_id"]
                                  and v)
            assert building["status"] == "building"
            events: list[str] = []

            def follow() -> None:
                try:
                    events.extend(daemon.client.stream(f"/v1/builds/{building['build_id']}/events"))
                except OSError as exc:
                    events.append(f"error: {exc!r}")

            follower = threading.Thread(target=follow)
            follower.start()
            eventually("the event stream is open", lambda: events)

            assert daemon.stop(signal.SIGTERM) == 0
            for t in [*threads, follower]:
                t.join(60)
                assert not t.is_alive()
        finally:
            release.set()
        hold.clear()

        for name in requests:
            answer = answers[name]
            assert isinstance(answer, tuple), (name, answer)
            status, body = answer
            assert status == 503, (name, body)
            assert body["error"]["code"] == "shutting-down" and "shutting down" in body["error"]["message"]
        phases = [line.split(": ", 1)[1] for line in events if line.startswith("event: ")]
        assert phases[-1] == "cancelled", events  # the stream ended with the build

        daemon.start()
        keep = daemon.client.get("/v1/envs/keep")
        assert (keep["status"], keep["env_key"], keep["prefix"], keep["error"]) == \
            ("ready", ready["env_key"], ready["prefix"], None)
        assert Path(keep["prefix"], "bin", "hello").exists()
        # A create stopped by the shutdown leaves no name ("nothing changed"): running it again works.
        assert daemon.raw("GET", "/v1/envs/fresh")[0] == 404
        builds = daemon.client.get("/v1/builds")["builds"]
        # Written by the stopping daemon itself, not by the next start-up's sweep ("interrupted").
        assert sorted(b["status"] for b in builds) == ["cancelled", "cancelled", "succeeded"]
        assert daemon.client.get("/v1/status")["builds_running"] == []

        # Nothing is stuck: the edit builds now.
        code, out, err = daemon.ctl("warm", "keep", "--json")
        assert code == 0, err
        assert json.loads(out)["env_key"] != ready["env_key"]
