"""Safe to leave running (issue #9, parts 3 and 4), checked with a real second user.

Another local user can read nothing of the store or the per-user state, cannot connect to the
socket, cannot plant a socket directory the daemon would use, and cannot answer in the daemon's
place. Channel tokens and passwords never reach the store in clear.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.cli.client import Client
from provisiond.domain.errors import ConfigError
from tests.conftest import Daemon, serve_directory, write_project

OTHER = "provisiond-other"


class OtherUser:
    """A throwaway system user; ``run`` runs a command as it (setpriv: no groups, no login)."""

    def __init__(self, uid: int, gid: int, python: str) -> None:
        self.uid, self.gid, self.python = uid, gid, python

    def argv(self, *argv: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *argv]

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*argv), input=stdin, capture_output=True, text=True, timeout=60)

    def readable(self, paths: list[Path]) -> list[str]:
        """The paths this user can open (files) or list (directories), of ``paths``."""
        probe = ("import os, sys\n"
                 "for p in sys.stdin.read().split('\\0'):\n"
                 "    try:\n"
                 "        os.listdir(p) if os.path.isdir(p) else open(p, 'rb').close()\n"
                 "    except OSError:\n"
                 "        continue\n"
                 "    print(p)\n")
        done = self.run(self.python, "-I", "-c", probe, stdin="\0".join(map(str, paths)))
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()


@pytest.fixture(scope="session")
def other_user() -> Iterator[OtherUser]:
    if os.geteuid() != 0:
        pytest.skip("creating a second user needs root")
    if not (shutil.which("useradd") and shutil.which("setpriv")):
        pytest.skip("needs useradd and setpriv (util-linux)")
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)
    if python is None:
        pytest.skip("needs a system python3 that another user can run")
    created = False
    try:
        entry = pwd.getpwnam(OTHER)
    except KeyError:  # reused when it is there (a run that was killed, a parallel session)
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER],
                       check=True, capture_output=True)
        created = True
        entry = pwd.getpwnam(OTHER)
    yield OtherUser(entry.pw_uid, entry.pw_gid, python)
    if created:
        subprocess.run(["userdel", OTHER], check=False, capture_output=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A short dir others may look into (0755), as most home directories are: only our modes protect us."""
    path = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def everything_under(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for directory, dirs, files in os.walk(root):
            out += [Path(directory, name) for name in (*dirs, *files)]
    return out


def other_cannot_get_in(other: OtherUser, d: Daemon) -> None:
    paths = [d.home, d.state, d.socket.parent, *everything_under(d.home, d.state)]
    assert other.readable(paths) == []
    connect = ("import socket, sys\n"
               "s = socket.socket(socket.AF_UNIX)\n"
               "try:\n"
               "    s.connect(sys.argv[1])\n"
               "except PermissionError:\n"
               "    sys.exit(13)\n")
    assert other.run(other.python, "-I", "-c", connect, str(d.socket)).returncode == 13


def start_project(open_dir: Path, channel: Path) -> tuple[Daemon, Path]:
    project = write_project(open_dir / "proj", channel, ["hello"], name="proj")
    (project / ".env").write_text("API_KEY=hunter2-from-dotenv\n")
    d = Daemon(home=open_dir / "home", socket=open_dir / "run" / "d.sock").start()
    code, _out, err = d.ctl("warm", str(project))
    assert code == 0, err
    return d, project


def test_another_user_can_read_nothing(other_user: OtherUser, open_dir: Path, channel: Path) -> None:
    d, _project = start_project(open_dir, channel)
    try:
        renders = list(d.state.rglob("activate.sh"))
        assert renders and any(b"hunter2-from-dotenv" in p.read_bytes() for p in renders)
        top = [p for p in d.home.iterdir() if p.is_dir()]
        for path in (d.home, d.state, d.socket.parent, *top, *[p for p in d.state.rglob("*") if p.is_dir()]):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        private_files = [d.home / "state.db", d.home / "daemon.lock", *(d.home / "locks").iterdir(),
                         *(d.home / "logs").iterdir(), *renders]
        for path in private_files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        other_cannot_get_in(other_user, d)
    finally:
        assert d.stop() == 0


def test_an_old_store_is_made_private_at_start(other_user: OtherUser, open_dir: Path, channel: Path) -> None:
    """A store an older provisiond wrote (0755 dirs, 0644 files) is tightened by the next start."""
    d, _project = start_project(open_dir, channel)
    assert d.stop() == 0
    for path in [d.home, d.state, *everything_under(d.home, d.state)]:  # not the socket's dir: not the store's
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert other_user.readable([d.home / "state.db"]) == [str(d.home / "state.db")]  # the old, open store
    d.start()
    try:
        other_cannot_get_in(other_user, d)
        assert stat.S_IMODE((d.home / "state.db").stat().st_mode) == 0o600
    finally:
        assert d.stop() == 0


def start_daemon(home: Path, socket: Path) -> subprocess.CompletedProcess[str]:
    """Run provisiond until it fails (these sockets are refused at start), with a private config."""
    env = {**os.environ, "PROVISIOND_CONFIG": str(home.parent / "none.toml"),
           "PROVISIOND_STATE": str(home.parent / "state")}
    return subprocess.run([sys.executable, "-m", "provisiond", "--home", str(home), "--socket", str(socket)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_the_daemon_refuses_a_socket_dir_another_user_made(other_user: OtherUser, tmp_path: Path) -> None:
    planted = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    try:
        os.chown(planted, other_user.uid, other_user.gid)
        done = start_daemon(tmp_path / "home", planted / "d.sock")
        assert done.returncode == os.EX_CONFIG, done.stderr
        assert f"socket directory {planted} is owned by uid {other_user.uid}, not by you" in done.stderr
        assert "hint: use a socket in a directory of your own" in done.stderr
        assert list(planted.iterdir()) == []
        # Our own private dir in theirs: they could rename it away and put another in its place.
        mine = planted / "mine"
        mine.mkdir(mode=0o700)
        done = start_daemon(tmp_path / "home", mine / "d.sock")
        assert done.returncode == os.EX_CONFIG, done.stderr
        assert f"socket directory {mine}: its parent {planted} can be changed by other users (owner uid " \
            f"{other_user.uid}" in done.stderr
        assert list(mine.iterdir()) == []
    finally:
        shutil.rmtree(planted)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_the_daemon_refuses_a_socket_dir_others_can_write(tmp_path: Path, mode: int) -> None:
    shared = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    try:
        shared.chmod(mode)
        done = start_daemon(tmp_path / "home", shared / "d.sock")
        assert done.returncode == os.EX_CONFIG, done.stderr
        assert f"socket directory {shared} is writable by other users (mode {mode:04o})" in done.stderr
        assert list(shared.iterdir()) == []
    finally:
        shutil.rmtree(shared)


def test_the_daemon_refuses_a_socket_right_in_tmp(tmp_path: Path) -> None:
    socket = Path("/tmp", f"pvd-{os.getpid()}-{tmp_path.name}.sock")
    done = start_daemon(tmp_path / "home", socket)
    assert done.returncode == os.EX_CONFIG, done.stderr
    assert "socket directory /tmp is writable by other users (mode 1777)" in done.stderr
    assert "hint: make one of your own in it (mkdir -m 700 /tmp/provisiond-$USER)" in done.stderr
    assert not socket.exists()


# A daemon impersonator: answers every request with a prefix of its own.
FAKE_DAEMON = """\
import socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen()
print("ready", flush=True)
body = b"/home/evil/prefix\\n"
while True:
    conn, _ = server.accept()
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain; charset=utf-8\\r\\nContent-Length: %d\\r\\n"
                     b"Connection: close\\r\\n\\r\\n%s" % (len(body), body))
    except OSError:  # a client that hung up without asking
        pass
    conn.close()
"""


def test_clients_do_not_trust_a_socket_another_user_serves(other_user: OtherUser) -> None:
    theirs = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    os.chown(theirs, other_user.uid, other_user.gid)
    socket = theirs / "d.sock"
    fake = subprocess.Popen(other_user.argv(other_user.python, "-I", "-c", FAKE_DAEMON, str(socket)),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
        warm = subprocess.run([sys.executable, "-m", "provisiond.ctl", "--socket", str(socket), "warm", "proj"],
                              capture_output=True, text=True, timeout=60)
        assert "/home/evil/prefix" not in warm.stdout
        assert warm.returncode == os.EX_CONFIG
        assert f"{socket} is served by uid {other_user.uid}, not by you (uid 0): refusing to talk to it" \
            in warm.stderr
        with pytest.raises(ConfigError, match="refusing to talk to it"):
            Client(socket, timeout=10).get("/v1/health")
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.communicate(timeout=30)
        shutil.rmtree(theirs)


# -- channel credentials -----------------------------------------------------------------------


def secrets_in(secret: bytes, *roots: Path) -> list[Path]:
    return [p for p in everything_under(*roots) if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]


@pytest.mark.parametrize("kind", ["token", "password"])
def test_channel_credentials_stay_out_of_the_store(kind: str, channel: Path, tmp_path: Path,
                                                   short_dir: Path) -> None:
    """A token in the path (/t/<token>/) or a password in the URL: in none of the store's files,
    and still there to download with after a restart, from the store's lock or an exported lockfile."""
    secret = f"s3cret-{kind}-{os.getpid()}"
    downloads: list[str] = []

    def record(path: str) -> None:
        if path.endswith((".conda", ".tar.bz2")):
            downloads.append(path)

    auth = {"token": secret} if kind == "token" else {"basic": ("bob", secret)}
    with serve_directory(channel, record, **auth) as url:
        channel_url = f"{url}t/{secret}/" if kind == "token" else url.replace("http://", f"http://bob:{secret}@")
        project = tmp_path / "proj"
        project.mkdir()
        (project / "environment.yml").write_text(
            f"name: private\nchannels:\n  - {channel_url}\ndependencies:\n  - hello\n")
        d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock").start()
        try:
            code, out, err = d.ctl("warm", str(project), "--json")
            assert code == 0, err
            prefix = Path(json.loads(out)["prefix"])
            hello = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=True)
            assert hello.stdout.startswith("Hello 2.0")
            assert downloads, "the packages came over HTTP"
            code, out, err = d.ctl("export", "private", "--explicit", "-f", str(tmp_path / "explicit.txt"))
            assert code == 0, err
        finally:
            assert d.stop() == 0
        assert secrets_in(secret.encode(), d.home) == []
        credentials = d.state / "credentials.json"
        assert secret in credentials.read_text() and stat.S_IMODE(credentials.stat().st_mode) == 0o600
        meta = [json.loads(p.read_text()) for p in (prefix / "conda-meta").glob("*.json")]
        assert meta and all(m["url"].startswith(url) for m in meta)

        for again in ("the stored lock", "an exported lockfile"):
            # Nothing cached any more: the packages must be downloaded again, with the credential
            # from the per-user file (the daemon restarted, so nothing is left in memory).
            shutil.rmtree(prefix)
            shutil.rmtree(d.home / "pkgs")
            before = len(downloads)
            d.start()
            try:
                if again == "the stored lock":
                    code, out, err = d.ctl("warm", str(project), "--json")
                else:
                    code, out, err = d.ctl("create", "-f", str(tmp_path / "explicit.txt"), "-n", "relocked",
                                           "--json")
                assert code == 0, f"{again}: {err}"
                assert Path(prefix, "bin", "hello").exists()
                assert len(downloads) > before, again
            finally:
                assert d.stop() == 0
            assert secrets_in(secret.encode(), d.home) == [], again
        assert d.log is not None and secret not in d.log.read_text()


def test_an_old_store_gives_its_credentials_up(channel: Path, tmp_path: Path, short_dir: Path) -> None:
    """A store an older provisiond wrote holds the token in its locks, solve cache, conda-meta and caches:
    the next start moves it into the credentials file and the env still downloads with it."""
    secret = f"old-s3cret-{os.getpid()}"
    downloads: list[str] = []
    with serve_directory(channel, lambda path: downloads.append(path), token=secret) as url:
        project = write_project(tmp_path / "proj", channel, ["hello"], name="old")
        tokened = f"{url}t/{secret}/"
        (project / "environment.yml").write_text(f"name: old\nchannels:\n  - {tokened}\ndependencies:\n  - hello\n")
        d = Daemon(home=tmp_path / "home", socket=short_dir / "d.sock").start()
        code, out, err = d.ctl("warm", str(project), "--json")
        assert code == 0, err
        prefix = Path(json.loads(out)["prefix"])
        assert d.stop() == 0

        # What the older provisiond left: the token in every URL it wrote, and no credentials file.
        old_files = [*(d.home / "locks").glob("*.json"), *(prefix / "conda-meta").glob("*.json"),
                     *(d.home / "pkgs").glob("*/info/repodata_record.json")]
        for path in old_files:
            path.write_text(path.read_text().replace(url, tokened))
        with sqlite3.connect(d.home / "state.db") as db:
            db.execute("UPDATE solves SET lock = replace(lock, ?, ?)", (url, tokened))
            db.execute("UPDATE builds SET error = ?", (f"install failed: {tokened}linux-64/x.conda: 503",))
        db.close()
        (d.state / "credentials.json").unlink()
        assert set(secrets_in(secret.encode(), d.home)) >= {*old_files, d.home / "state.db"}

        d.start()
        assert d.stop() == 0
        assert secrets_in(secret.encode(), d.home) == []
        assert secret in (d.state / "credentials.json").read_text()

        shutil.rmtree(prefix)
        shutil.rmtree(d.home / "pkgs")
        before = len(downloads)
        d.start()
        try:
            code, out, err = d.ctl("warm", str(project), "--json")
            assert code == 0, err
            assert Path(prefix, "bin", "hello").exists() and len(downloads) > before
        finally:
            assert d.stop() == 0
        assert secrets_in(secret.encode(), d.home) == []
