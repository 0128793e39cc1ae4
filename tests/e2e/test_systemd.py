"""systemd: the units verify, and the daemon serves an inherited socket and reports READY=1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from provisiond.cli.client import Client
from tests.conftest import REPO, Daemon

EXE = Path(sys.executable).with_name("provisiond")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)")
@pytest.mark.skipif(not EXE.exists(), reason="the provisiond console script is not installed (pip install -e .)")
def test_units_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from provisiond.cli import commands as cli

    assert cli.main(["daemon", "install-units", "--dir", str(tmp_path), "--json"]) == 0
    units = json.loads(capsys.readouterr().out)["units"]
    assert sorted(Path(u).name for u in units) == ["provisiond.service", "provisiond.socket"]
    service = (tmp_path / "provisiond.service").read_text()
    assert "Type=notify" in service and "RestartPreventExitStatus=78" in service
    assert "ExecReload=/bin/kill -HUP $MAINPID" in service
    assert "SocketMode=0600" in (tmp_path / "provisiond.socket").read_text()
    proc = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # The check can fail: a unit with a typo does not verify.
    (tmp_path / "provisiond.service").write_text(service.replace("Type=notify", "Type=notifyy"))
    bad = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert "notifyy" in bad.stderr


def test_socket_activation_answers_the_first_request(tmp_path: Path, short_dir: Path) -> None:
    path = short_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_dir / "notify"))
    notify.settimeout(60)
    daemon = Daemon(home=tmp_path / "home", socket=path)
    env = {**daemon.environ(), "LISTEN_FDS": "1", "NOTIFY_SOCKET": str(short_dir / "notify")}
    env.pop("LISTEN_PID", None)
    argv = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", sys.executable, "-m", "provisiond",
            "--home", str(daemon.home), "--socket", str(path)]
    proc = None
    try:
        # As systemd does: the listening socket is fd 3 and LISTEN_PID names the daemon itself.
        with open(tmp_path / "daemon.log", "wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log,
                                    pass_fds=tuple({3, listener.fileno()}),
                                    preexec_fn=lambda: os.dup2(listener.fileno(), 3))
        # The first request is sent before the daemon is ready; the kernel queues it on our socket.
        assert Client(path, timeout=60).get("/v1/health")["status"] == "ok"
        messages = notify.recv(4096).decode()
        assert "READY=1" in messages and "STATUS=serving" in messages
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "STOPPING=1" in notify.recv(4096).decode()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
        notify.close()


def test_repository_units_are_the_installed_templates() -> None:
    from provisiond.daemon.systemd import UNITS

    for name in ("provisiond.socket", "provisiond.service"):
        assert (REPO / "systemd" / name).read_text() == (UNITS / name).read_text(), \
            f"systemd/{name} and provisiond/daemon/units/{name} differ: copy one onto the other"


def _install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: str,
             capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """install-units under a user with ``config`` as config.toml: (ListenStream value, provisionctl's socket)."""
    from provisiond.cli import commands as cli
    from provisiond.config.locations import Sources

    toml = tmp_path / "config.toml"
    toml.write_text(config)
    monkeypatch.setenv("PROVISIOND_CONFIG", str(toml))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user" / ".config"))
    monkeypatch.delenv("PROVISIOND_SOCKET", raising=False)
    monkeypatch.delenv("PROVISIOND_HOME", raising=False)
    assert cli.main(["daemon", "install-units", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    unit = (tmp_path / "user" / ".config" / "systemd" / "user" / "provisiond.socket").read_text()
    listen = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ListenStream="))
    service = (tmp_path / "user" / ".config" / "systemd" / "user" / "provisiond.service").read_text()
    assert f"--socket {listen}\n" in service  # the daemon is told the same path
    assert "@" not in unit.replace("@...@", "") and "@" not in service.replace("@...@", "")  # every placeholder filled
    ours = Sources(None, dict(os.environ)).socket()
    assert answer["socket"] == ours
    return listen, ours


def test_units_listen_where_provisionctl_looks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from provisiond.config.units import from_unit, installed_socket

    listen, ours = _install(monkeypatch, tmp_path, "", capsys)
    assert listen == "%t/provisiond/provisiond.sock" and from_unit(listen, os.environ) == ours
    # `home =` moves provisionctl's socket beside the store: the units follow it.
    listen, ours = _install(monkeypatch, tmp_path, 'home = "~/stores/main"\n', capsys)
    assert listen == "%h/stores/main/provisiond.sock" and ours == str(tmp_path / "user/stores/main/provisiond.sock")
    assert installed_socket(os.environ) == ours
    if shutil.which("systemd-analyze") and EXE.exists():
        units = tmp_path / "user/.config/systemd/user"
        proc = subprocess.run(["systemd-analyze", "verify", str(units / "provisiond.socket"),
                               str(units / "provisiond.service")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    listen, ours = _install(monkeypatch, tmp_path, f'socket = "{tmp_path}/s/p.sock"\n', capsys)
    assert from_unit(listen, os.environ) == ours == f"{tmp_path}/s/p.sock"


def test_not_running_hint_names_the_units(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from provisiond.cli import commands as cli

    _install(monkeypatch, tmp_path, 'home = "~/store"\n', capsys)
    assert cli.main(["status"]) == 69
    err = capsys.readouterr().err
    assert "provisiond is not running" in err and "systemctl --user start provisiond.socket" in err
    # The config changed after the units were written: the hint says they listen elsewhere.
    (tmp_path / "config.toml").write_text('home = "~/other"\n')
    assert cli.main(["status"]) == 69
    err = capsys.readouterr().err
    assert f"listens on {tmp_path}/user/store/provisiond.sock" in err and "install-units" in err
    (tmp_path / "user/.config/systemd/user/provisiond.socket").unlink()
    assert cli.main(["status"]) == 69
    assert "systemctl" not in capsys.readouterr().err.split("hint:")[-1].split("install")[0]


@pytest.mark.skipif(not EXE.exists(), reason="the provisiond console script is not installed (pip install -e .)")
def test_the_units_daemon_answers_provisionctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Run the service as systemd would (its ListenStream bound, fd 3, its ExecStart), with `home =`
    in config.toml: provisionctl, reading the same config, finds it."""
    from provisiond.cli import commands as cli
    from provisiond.config.units import from_unit

    short = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    try:
        monkeypatch.setenv("PROVISIOND_STATE", str(tmp_path / "state"))
        monkeypatch.setenv("PROVISIOND_CONDA_CONFIG", "false")
        listen, ours = _install(monkeypatch, tmp_path, f'home = "{short}/store"\n', capsys)
        service = (tmp_path / "user/.config/systemd/user/provisiond.service").read_text()
        exec_start = next(line.split("=", 1)[1] for line in service.splitlines() if line.startswith("ExecStart="))
        argv = [from_unit(word, os.environ) for word in exec_start.split()]
        path = Path(from_unit(listen, os.environ))
        path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(16)
        env = {**os.environ, "LISTEN_FDS": "1"}
        with open(tmp_path / "log", "wb") as log:
            proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *argv], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log, pass_fds=tuple({3, listener.fileno()}),
                                    preexec_fn=lambda: os.dup2(listener.fileno(), 3))
        try:
            assert cli.main(["status", "--json"]) == 0, (tmp_path / "log").read_text()
            status = json.loads(capsys.readouterr().out)
            assert status["socket"] == ours and status["store"] == f"{short}/store"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, (tmp_path / "log").read_text()
            listener.close()
    finally:
        shutil.rmtree(short, ignore_errors=True)
