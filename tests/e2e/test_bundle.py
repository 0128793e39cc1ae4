"""Bundles and the container recipe: build, bundle, delete the store, restore at the same path, cold-start.

Docker cannot run here, so the recipe test runs what examples/container/Dockerfile runs: its build
script with a fixed PROVISIOND_HOME, then the runtime stage's COPY of the bundle to that path, then
its ENTRYPOINT, with the daemon gone and no python3 on PATH.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.cli import commands as cli
from tests.conftest import REPO, Daemon, serve_directory, write_project

RECIPE = REPO / "examples" / "container"
WAIT = 120  # seconds: a hang guard, never a timing assertion
IMAGE_FILES = ["activation", "bin", "bundle.json", "envs", "leases", "locks"]


@pytest.fixture
def no_python_bin(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "sh").symlink_to("/bin/sh")
    assert shutil.which("python3", path=str(directory)) is None
    return directory


def entrypoint(argv: list[str], path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run like a container's entrypoint: nothing in the environment but PATH (and what is given)."""
    return subprocess.run(argv, env={"PATH": str(path), **env}, capture_output=True, text=True, timeout=WAIT)


def ctl(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    return daemon.ctl("--home", str(daemon.home), *args)


def test_bundle_then_unbundle_at_the_same_path(daemon: Daemon, channel: Path, tmp_path: Path,
                                               no_python_bin: Path) -> None:
    project = write_project(tmp_path / "app", channel, ["hello", "greet-data"], name="app",
                            extra="variables:\n  APP_MODE: prod\n")
    (project / ".env").write_text("SECRET_TOKEN=s3cr3t-value\n")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    env = json.loads(out)
    archive = tmp_path / "app.tar"
    code, out, err = ctl(daemon, "bundle", "app", "-o", str(archive))
    assert code == 0, err
    assert out.startswith(f"wrote {archive}: app (env {env['env_key'][:16]})")
    assert daemon.stop() == 0

    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert {Path(m.name).parts[0] for m in members} == {*IMAGE_FILES}
        assert not [m.name for m in members if m.islnk()]  # hardlinks into pkgs/ became files
        assert not [m.name for m in members if m.isfile() and b"s3cr3t" in tar.extractfile(m).read()]  # type: ignore[union-attr]

    # A fresh directory at the same path: nothing of the old store is left.
    shutil.move(daemon.home, tmp_path / "old-store")
    code, out, err = daemon.ctl("unbundle", str(archive), "--home", str(daemon.home))
    assert (code, out) == (0, f"unbundled app (env {env['env_key'][:16]}) into {daemon.home}\n"), err
    assert sorted(os.listdir(daemon.home)) == IMAGE_FILES  # no package cache, no state.db
    files = [p for p in Path(env["prefix"]).rglob("*") if p.is_file() and not p.is_symlink()]
    assert files and all(p.stat().st_nlink == 1 for p in files)

    hello = entrypoint([str(daemon.home / "bin" / "cold-start"), "app", "--", "hello"], no_python_bin)
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, f"Hello 2.0 from {env['prefix']}\n", "")
    # provisionctl run reads the same store, with no daemon.
    run = subprocess.run([sys.executable, "-m", "provisiond.ctl", "--home", str(daemon.home), "run", "app", "--",
                          "sh", "-c", 'echo "$APP_MODE $HELLO_ACTIVATED"'],
                         env=daemon.environ(), capture_output=True, text=True, timeout=WAIT)
    assert (run.returncode, run.stdout) == (0, "prod 1\n"), run.stderr

    # Unbundling again over it is harmless.
    assert daemon.ctl("unbundle", str(archive), "--home", str(daemon.home))[0] == 0


def test_a_bundle_only_works_at_the_path_it_was_built_for(daemon: Daemon, channel: Path, tmp_path: Path,
                                                          no_python_bin: Path) -> None:
    code, _, err = daemon.ctl("warm", str(write_project(tmp_path / "app", channel, ["hello"], name="app")))
    assert code == 0, err
    archive = tmp_path / "app.tar.gz"
    assert ctl(daemon, "bundle", "app", "-o", str(archive))[0] == 0
    elsewhere = tmp_path / "elsewhere"
    code, _, err = daemon.ctl("unbundle", str(archive), "--home", str(elsewhere))
    assert code == os.EX_USAGE and f"was built for the store at {daemon.home}, not {elsewhere}" in err
    assert not elsewhere.exists()
    # Copied there anyway (a plain tar -x), with the original store gone: cold-start says why, in one line.
    elsewhere.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(elsewhere, filter="tar")
    assert daemon.stop() == 0
    shutil.rmtree(daemon.home)
    proc = entrypoint([str(elsewhere / "bin" / "cold-start"), "app", "--", "hello"], no_python_bin)
    assert proc.returncode == 127 and proc.stderr.count("\n") == 1
    assert f"was built for the store at {daemon.home}:" in proc.stderr
    daemon.start()  # on an empty store: the fixture stops it


def test_bundle_errors(daemon: Daemon, channel: Path, tmp_path: Path) -> None:
    code, _, err = ctl(daemon, "bundle", "nope", "-o", str(tmp_path / "x.tar"))
    assert code == os.EX_NOINPUT and "no env named 'nope'" in err
    assert daemon.ctl("warm", str(write_project(tmp_path / "app", channel, ["libgreet"], name="app")))[0] == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    code, _, err = ctl(daemon, "bundle", "app", "-o", str(tmp_path / "full"))
    assert code == os.EX_USAGE and "not an empty directory" in err
    code, _, err = daemon.ctl("unbundle", str(tmp_path / "full"), "--home", str(daemon.home))
    assert code == os.EX_USAGE and "not a provisiond bundle" in err
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_container_recipe(channel: Path, tmp_path: Path, short_dir: Path, no_python_bin: Path) -> None:
    """examples/container/Dockerfile, step by step, with its store path moved into tmp_path."""
    dockerfile = (RECIPE / "Dockerfile").read_text()
    image_home = re.search(r"^ENV PROVISIOND_HOME=(\S+)$", dockerfile, re.M)
    build = re.search(r"^RUN sh /src/(examples/container/build-env) \S+ (\S+) (\S+)$", dockerfile, re.M)
    copy = re.search(r"^COPY --from=build (\S+)/ (\S+)/$", dockerfile, re.M)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
    assert image_home and build and copy and entry
    name, bundle_dir = build[2], build[3]
    assert copy[1] == bundle_dir and copy[2] == image_home[1]  # the runtime stage copies the bundle to the same path
    home = tmp_path / "opt-provisiond"

    # Stage 1: the build script with the store at its final path, a short-lived daemon, a bundle.
    spec = write_project(tmp_path / "src", channel, ["hello"], name=name,
                         extra="variables:\n  APP_MODE: production\n") / "environment.yml"
    out = tmp_path / "bundle"
    environ = {**os.environ, "PROVISIOND_HOME": str(home), "PROVISIOND_SOCKET": str(short_dir / "d.sock"),
               "PROVISIOND_STATE": str(tmp_path / "state"), "PROVISIOND_CONFIG": str(tmp_path / "none.toml"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["sh", str(REPO / build[1]), str(spec), name, str(out)], env=environ,
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (short_dir / "d.sock").exists()  # the daemon is gone
    prefix = json.loads((out / "bundle.json").read_text())["names"][name]["prefix"]

    # Stage 2: a fresh image holding only the bundle, at the same path.
    shutil.rmtree(home)
    shutil.copytree(out, home, symlinks=True)
    argv = [arg.replace(image_home[1], str(home)) for arg in json.loads(entry[1])]
    for env in ({}, {"PROVISIOND_HOME": str(home)}):  # the Dockerfile sets it; cold-start also finds its store
        proc = entrypoint([*argv, "sh", "-c", 'hello; echo "$APP_MODE $CONDA_DEFAULT_ENV"'], no_python_bin, **env)
        assert (proc.returncode, proc.stderr) == (0, "")
        assert proc.stdout == f"Hello 2.0 from {prefix}\nproduction {name}\n"
    assert Path(prefix).parent.parent == home


# -- channel credentials stay in the store ---------------------------------------------------------

@pytest.fixture
def channel_with_credentials(channel: Path) -> Iterator[str]:
    """The local channel over HTTP, as ``http://alice:s3cret@127.0.0.1:PORT/``: the server ignores the
    credentials; the engine sends them, but the store keeps none of them (docs/store.md)."""
    with serve_directory(channel) as url:
        yield url.replace("http://", "http://alice:s3cret@")


def files_holding(root: Path, *needles: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and any(n in p.read_bytes() for n in needles))


def test_a_bundle_carries_no_channel_credentials(daemon: Daemon, channel_with_credentials: str, tmp_path: Path,
                                                 no_python_bin: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "environment.yml").write_text(
        f"name: app\nchannels:\n  - {channel_with_credentials}\ndependencies:\n  - hello\n")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    env = json.loads(out)
    # Since issue #9 the store records them nowhere (they live in the per-user credentials file),
    # so the bundle's scrubbing is what protects bundles of older stores; the result is the same.
    lock_file = daemon.home / "locks" / f"{env['env_key']}.json"
    assert files_holding(daemon.home, b"s3cret", b"alice") == []
    assert b"alice:s3cret@" in (daemon.state / "credentials.json").read_bytes()
    meta_dir = daemon.home / "envs" / env["env_key"][:16] / "conda-meta"
    before = {p.name: p.read_bytes() for p in meta_dir.glob("*.json")}
    lock_before = lock_file.read_bytes()

    archive, directory = tmp_path / "app.tar", tmp_path / "app-bundle"
    for out_path in (archive, directory):
        code, _, err = ctl(daemon, "bundle", "app", "-o", str(out_path))
        assert code == 0, err
    # The store's own files are untouched.
    assert lock_file.read_bytes() == lock_before
    assert {p.name: p.read_bytes() for p in meta_dir.glob("*.json")} == before
    assert daemon.stop() == 0

    # No file of either bundle holds the password or the user (grep everything).
    extracted = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="tar")
    for root in (extracted, directory):
        assert files_holding(root, b"s3cret", b"alice") == []
        lock = json.loads((root / "locks" / f"{env['env_key']}.json").read_text())
        assert lock["env_key"] == env["env_key"]
        assert {p["url"] for p in lock["packages"]} == {p["url"] for p in json.loads(lock_before)["packages"]}
        meta = json.loads(next((root / "envs" / env["env_key"][:16] / "conda-meta").glob("hello-*.json")).read_text())
        assert meta["url"].startswith("http://127.0.0.1:") and meta["channel"].startswith("http://127.0.0.1:")
        assert meta["files"] == json.loads(before[next(p for p in before if p.startswith("hello-"))])["files"]

    # It still restores and cold-starts.
    shutil.move(daemon.home, tmp_path / "old-store")
    code, _, err = daemon.ctl("unbundle", str(archive), "--home", str(daemon.home))
    assert code == 0, err
    hello = entrypoint([str(daemon.home / "bin" / "cold-start"), "app", "--", "hello"], no_python_bin)
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, f"Hello 2.0 from {env['prefix']}\n", "")
    assert files_holding(daemon.home, b"s3cret") == []
    daemon.start()  # on the restored store: the fixture stops it


# -- symlinks inside a prefix are fine ---------------------------------------------------------------

def test_symlinks_inside_a_prefix_survive_a_round_trip(daemon: Daemon, channel: Path, tmp_path: Path,
                                                       no_python_bin: Path) -> None:
    """Conda packages have softlinks (libfoo.so -> libfoo.so.1, bin/python -> python3.11): relative,
    chained, to directories, and absolute ones into the prefix all unbundle as they were."""
    code, out, err = daemon.ctl("warm", str(write_project(tmp_path / "app", channel, ["hello"], name="app")),
                                "--json")
    assert code == 0, err
    prefix = Path(json.loads(out)["prefix"])
    links = {"lib/libgreet.so.1": "libgreet.so", "lib/libgreet.so.1.0": "libgreet.so.1",  # a chain
             "share/lib": "../lib", "share/libgreet.so": "lib/libgreet.so.1.0",  # through a directory link
             "bin/hi": str(prefix / "bin" / "hello"), "etc/dangling": "nothing-here"}
    for link, target in links.items():
        (prefix / link).parent.mkdir(parents=True, exist_ok=True)
        (prefix / link).symlink_to(target)
    archive, directory = tmp_path / "app.tar.gz", tmp_path / "app-bundle"
    for out_path in (archive, directory):
        assert ctl(daemon, "bundle", "app", "-o", str(out_path))[0] == 0
    assert daemon.stop() == 0
    shutil.move(daemon.home, tmp_path / "old-store")

    for source in (archive, directory):
        code, _, err = daemon.ctl("unbundle", str(source), "--home", str(daemon.home))
        assert code == 0, err
        assert {link: os.readlink(prefix / link) for link in links} == links
        assert (prefix / "share" / "libgreet.so").resolve() == prefix / "lib" / "libgreet.so"
        hello = entrypoint([str(daemon.home / "bin" / "cold-start"), "app", "--", "hi"], no_python_bin)
        assert (hello.returncode, hello.stdout, hello.stderr) == (0, f"Hello 2.0 from {prefix}\n", "")
        shutil.rmtree(daemon.home)
    daemon.start()  # on an empty store: the fixture stops it


# -- a bundle from elsewhere cannot write outside the home ------------------------------------------

KEY = "0123456789abcdef" * 4


class EvilBundle:
    """A complete-looking bundle for ``home``, plus whatever a test adds: a tar or a directory."""

    def __init__(self, home: Path, names: dict[str, str] | None = None) -> None:
        names = {"app": KEY} if names is None else names
        manifest = {"scheme": 1, "home": str(home), "provisiond": "0", "names": {
            name: {"env_key": key, "prefix": f"{home}/envs/{key[:16]}"} for name, key in names.items()}}
        self.members: list[tuple[str, str, bytes | str]] = [("bundle.json", "file", json.dumps(manifest))]
        for key in set(names.values()):
            self.dir(f"envs/{key[:16]}")
            self.file(f"envs/{key[:16]}/.provisiond-complete.json", "{}")
            self.file(f"locks/{key}.json", "{}")
            self.file(f"activation/{key}/env.json", "{}")
        self.file("bin/cold-start", "#!/bin/sh\n")
        for name in names:
            if "/" not in name:
                for file in ("activate.sh", "activate.json", "env"):
                    self.file(f"activation/names/{name}/{file}", "echo attacker code\n")

    def file(self, rel: str, data: str = "pwned\n") -> EvilBundle:
        self.members.append((rel, "file", data))
        return self

    def dir(self, rel: str) -> EvilBundle:
        self.members.append((rel, "dir", ""))
        return self

    def symlink(self, rel: str, target: str) -> EvilBundle:
        self.members.append((rel, "symlink", target))
        return self

    def drop(self, under: str) -> EvilBundle:
        self.members = [m for m in self.members if not m[0].startswith(f"{under}/")]
        return self

    def hardlink(self, rel: str, target: str) -> EvilBundle:
        self.members.append((rel, "hardlink", target))
        return self

    def tar(self, out: Path) -> Path:
        with tarfile.open(out, "w") as tar:
            for rel, kind, data in self.members:
                info = tarfile.TarInfo(rel)
                info.mode = 0o755
                if kind == "file":
                    body = data.encode() if isinstance(data, str) else data
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
                    continue
                info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
                info.linkname = str(data)
                tar.addfile(info)
        return out

    def directory(self, out: Path) -> Path:
        for rel, kind, data in self.members:
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_bytes(data.encode() if isinstance(data, str) else data)
            elif kind == "dir":
                path.mkdir(exist_ok=True)
            elif kind == "symlink":
                path.symlink_to(str(data))
            else:
                raise AssertionError(f"no {kind} in a directory bundle")
        return out


def the_reviewers_bundle(home: Path, outside: Path) -> EvilBundle:
    """A symlink at activation/names/L and a name L/../../..: the name's files land in ``outside``."""
    name = "L/" + "../" * 40 + str(outside).lstrip("/")
    bundle = EvilBundle(home, {name: KEY}).dir("bin/a/b/c/d/e/f/g")
    for file in ("activate.sh", "activate.json", "env"):
        bundle.file(f"bin/{str(outside).lstrip('/')}/{file}", "echo attacker code\n")
    return bundle.symlink("activation/names/L", "../../bin/a/b/c/d/e/f/g")


EVIL = {
    "symlink-and-dotdot-name": (the_reviewers_bundle, "refusing the env name 'L/../"),
    "dotdot-name": (lambda home, outside: EvilBundle(home, {f"../../../{outside.name}": KEY}),
                    "refusing the env name '../../../outside'"),
    "dotdot-env-key": (lambda home, outside: EvilBundle(home, {"app": f"../../{outside.name}/" + "0" * 52}),
                       "is not 64 hex digits"),
    "dotdot-member": (lambda home, outside: EvilBundle(home).file(f"envs/../../{outside.name}/x"),
                      "writes outside its root ('envs/../../outside/x')"),
    "absolute-member": (lambda home, outside: EvilBundle(home).file(f"{outside}/x"),
                        "writes outside its root ('{outside}/x')"),
    "symlink-in-activation": (lambda home, outside: EvilBundle(home).symlink(f"activation/{KEY}/hooks", str(outside)),
                              f"refusing the symlink 'activation/{KEY}/hooks': symlinks belong only inside"),
    # unbundle would move b's files from outside into the store (os.replace through the staged symlink)
    "symlink-as-name-dir": (lambda home, outside: EvilBundle(home, {"app": KEY, "b": KEY}).drop("activation/names/b")
                            .symlink("activation/names/b", str(outside)), "refusing the symlink 'activation/names/b'"),
    "symlink-as-prefix": (lambda home, outside: EvilBundle(home).symlink("envs/x", str(outside)),
                          "refusing the symlink 'envs/x'"),
    "symlink-out-of-prefix": (lambda home, outside: EvilBundle(home).symlink(
        f"envs/{KEY[:16]}/lib/o", "../../../../outside"), "points outside its env"),
    "absolute-symlink-out-of-prefix": (lambda home, outside: EvilBundle(home).symlink(
        f"envs/{KEY[:16]}/lib/o", str(outside)), "points outside its env"),
    "absolute-symlink-into-the-store": (lambda home, outside: EvilBundle(home).symlink(
        f"envs/{KEY[:16]}/lib/o", f"{home}/activation"), "points outside its env"),
    "chained-symlinks-out-of-prefix": (  # s1 -> . and s2 -> s1/.. : read as text, s2 stays inside
        lambda home, outside: EvilBundle(home).symlink(f"envs/{KEY[:16]}/s1", ".")
        .symlink(f"envs/{KEY[:16]}/s2", "s1/..").symlink(f"envs/{KEY[:16]}/s3", "s2/.."),
        "'envs/0123456789abcdef/s2' -> 's1/..'"),
    "file-through-a-symlink": (lambda home, outside: EvilBundle(home).symlink(f"envs/{KEY[:16]}/d", "sub")
                               .file(f"envs/{KEY[:16]}/d/x"), "goes through the symlink 'envs/0123456789abcdef/d'"),
    "symlink-then-file": (lambda home, outside: EvilBundle(home).symlink(f"envs/{KEY[:16]}/x", "y")
                          .file(f"envs/{KEY[:16]}/x"), "is in the bundle twice"),
    "hardlink": (lambda home, outside: EvilBundle(home).hardlink(f"envs/{KEY[:16]}/h", str(outside / "x")),
                 "a hardlink"),
}


TAR_ONLY = {
    "dotdot-member": "a member outside itself", "absolute-member": "a member outside itself",
    "dotdot-env-key": "a member outside itself",
    "file-through-a-symlink": "a file beneath a symlink", "symlink-then-file": "two files at one path",
    "hardlink": "a hardlink member",
}


# A directory bundle cannot hold the TAR_ONLY cases at all: those run as tars only.
@pytest.mark.parametrize(("case", "form"), [(case, form) for case in sorted(EVIL) for form in ("tar", "dir")
                                            if form == "tar" or case not in TAR_ONLY])
def test_an_evil_bundle_is_refused_with_nothing_written(case: str, form: str, tmp_path: Path) -> None:
    build, message = EVIL[case]
    home, outside = tmp_path / "home", tmp_path / "outside"
    bundle = build(home, outside)
    source = bundle.tar(tmp_path / "evil.tar") if form == "tar" else bundle.directory(tmp_path / "evil")
    before = sorted(p.name for p in tmp_path.iterdir())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["unbundle", str(source), "--home", str(home)])
    assert code == os.EX_USAGE, (out.getvalue(), err.getvalue())
    first = err.getvalue().splitlines()[0]
    assert first.startswith(f"provisionctl: {source}: ") and message.format(outside=outside) in first, first
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no home, nothing outside
    assert not outside.exists() and not home.exists()


def test_the_reviewers_bundle_through_the_console_script(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    source = the_reviewers_bundle(home, outside).tar(tmp_path / "evil.tar")
    proc = subprocess.run([sys.executable, "-m", "provisiond.ctl", "unbundle", str(source), "--home", str(home)],
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == os.EX_USAGE and "refusing the env name" in proc.stderr, proc.stderr
    assert not outside.exists() and not home.exists()


def test_unbundle_never_writes_through_a_symlink_in_the_store(daemon: Daemon, channel: Path,
                                                              tmp_path: Path) -> None:
    """A store whose activation/names/app is a symlink elsewhere: refused before anything is written."""
    assert daemon.ctl("warm", str(write_project(tmp_path / "app", channel, ["hello"], name="app")))[0] == 0
    archive = tmp_path / "app.tar"
    assert ctl(daemon, "bundle", "app", "-o", str(archive))[0] == 0
    assert daemon.stop() == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    names = daemon.home / "activation" / "names"
    shutil.rmtree(names / "app")
    (names / "app").symlink_to(elsewhere)
    before = sorted(str(p.relative_to(daemon.home)) for p in daemon.home.rglob("*"))
    code, _, err = daemon.ctl("unbundle", str(archive), "--home", str(daemon.home))
    assert code == os.EX_USAGE and f"resolves to {elsewhere}/activate.sh, outside it" in err, err
    assert list(elsewhere.iterdir()) == []
    assert sorted(str(p.relative_to(daemon.home)) for p in daemon.home.rglob("*")) == before
    daemon.start()  # the fixture stops it
