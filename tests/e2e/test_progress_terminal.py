"""The progress bar in real terminals (tmux) of 40 and 120 columns: redrawn in place, never wrapped,
cleared at the end; bold only without NO_COLOR."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import Daemon, serve_directory

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (apt: tmux)")


def _tmux(server: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", server, "-f", "/dev/null", *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


@pytest.mark.parametrize(("columns", "no_color"), [(40, False), (120, True)])
def test_the_bar_fits_a_real_terminal(daemon: Daemon, channel: Path, tmp_path: Path, columns: int,
                                      no_color: bool) -> None:
    one_at_a_time = threading.Lock()

    def slow(path: str) -> None:
        if path.endswith((".conda", ".tar.bz2")):
            with one_at_a_time:  # downloads end one by one, 0.4 s apart: the download phase lasts
                time.sleep(0.4)

    name = f"w{columns}"
    server = f"pvd-{uuid.uuid4().hex[:8]}"
    with serve_directory(channel, slow) as url:
        project = tmp_path / "p"
        project.mkdir()
        (project / "environment.yml").write_text(
            f"name: {name}\nchannels:\n  - {url}\ndependencies:\n  - hello\n  - greet-data\n  - tool-a\n")
        assert daemon.ctl("watch", str(project), "--no-warm")[0] == 0
        env = {"PROVISIOND_SOCKET": str(daemon.socket), "PROVISIONCTL_PROGRESS_DELAY": "0", "TERM": "xterm"}
        if no_color:
            env["NO_COLOR"] = "1"
        command = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                            shlex.quote(sys.executable), "-m", "provisiond.cli", "warm", name])
        _tmux(server, "new-session", "-d", "-x", str(columns), "-y", "30", "-s", "t",
              f"env -u NO_COLOR {command}; echo EXIT=$?; sleep 60")
        try:
            screens, escaped = [], []
            deadline = time.monotonic() + 90
            while True:
                screen = _tmux(server, "capture-pane", "-p", "-t", "t")
                screens.append(screen)
                escaped.append(_tmux(server, "capture-pane", "-p", "-e", "-t", "t"))
                if "EXIT=" in screen:
                    break
                assert time.monotonic() < deadline, screen
                time.sleep(0.03)
        finally:
            subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=30)
    assert "EXIT=0" in screens[-1], screens[-1]
    drawn = [s for s in screens if f"{name} " in s]
    assert len(drawn) >= 3, "the bar was never seen"
    assert any("download" in s or "link" in s for s in drawn), [s.splitlines()[0] for s in screens]
    for screen in screens:
        bar_lines = [line for line in screen.splitlines() if line.startswith(f"{name} ")]
        assert len(bar_lines) <= 1, screen  # a wrapped line would leave its first part behind
        assert all(len(line) < columns for line in bar_lines), screen
    final = screens[-1].splitlines()
    assert not any(line.startswith(f"{name} ") for line in final), screens[-1]  # cleared at the end
    assert str(daemon.home) in "".join(final)  # the prefix (wrapped by the terminal, as any long output)
    bold = any("\x1b[1m" in s for s in escaped)
    assert bold is not no_color
