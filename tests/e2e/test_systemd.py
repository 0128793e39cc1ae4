"""systemd: the units verify, and the daemon serves an inherited socket and reports READY=1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.cli.client import Client
from tests.conftest import Daemon

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
