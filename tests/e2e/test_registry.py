"""push, pull and image against a real registry (Debian's docker-registry on a loopback port)."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing import registry as reg
from provisiond.testing.channel import Pkg, build_channel, demo_packages, hello_pkg
from tests.conftest import Daemon, write_project

pytestmark = pytest.mark.skipif(reg.missing() is not None, reason=str(reg.missing()))


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reg.LocalRegistry]:
    r = reg.LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    yield r
    r.stop()


def _daemon(tmp: Path, short: Path, auth_file: Path | None = None, tag: str = "a") -> Daemon:
    d = Daemon(home=tmp / f"home-{tag}", socket=short / f"{tag}.sock")
    if auth_file is None:
        auth_file = tmp / "no-logins.json"
    d.base_env["PROVISIOND_REGISTRY_AUTH_FILE"] = str(auth_file)
    return d.start()


def _create(d: Daemon, project: Path, name: str) -> dict:
    code, out, err = d.ctl("--json", "create", "-f", str(project / "environment.yml"), "-n", name)
    assert code == 0, err
    return json.loads(out)


def _ctl_json(d: Daemon, *args: str) -> tuple[int, dict]:
    code, out, err = d.ctl("--json", *args)
    return code, json.loads(out) if out.strip() else {"stderr": err}


def test_push_wipe_pull_same_env_key_runs_offline(registry: reg.LocalRegistry, tmp_path: Path,
                                                  short_dir: Path) -> None:
    channel = build_channel(tmp_path / "channel", demo_packages())
    project = write_project(tmp_path / "proj", channel, ["hello 1.*", "greet-data"])
    a = _daemon(tmp_path, short_dir, tag="a")
    try:
        built = _create(a, project, "tools")
        ref = f"{registry.address}/team/tools:v1"
        code, pushed = _ctl_json(a, "push", "tools", ref)
        assert code == 0, pushed
        assert pushed["env_key"] == built["env_key"] and pushed["tags"] == ["v1"]
        assert pushed["transferred"] == pushed["blobs"] == 4  # 3 packages + the lock
        # Pushed again, nothing moves: every blob is there (HEAD), only the manifest is PUT again.
        code, again = _ctl_json(a, "push", "tools", ref)
        assert code == 0 and again["transferred"] == 0 and again["skipped"] == 4
        assert again["digest"] == pushed["digest"]
    finally:
        assert a.stop() == 0
    shutil.rmtree(a.home)
    shutil.rmtree(channel)  # no channel: the pull must need none
    b = _daemon(tmp_path, short_dir, tag="b")
    try:
        code, pulled = _ctl_json(b, "pull", ref, "-n", "tools2")
        assert code == 0, pulled
        assert pulled["env_key"] == built["env_key"]
        assert pulled["transferred"] == 3 and pulled["status"] == "ready"
        out = subprocess.run([f"{pulled['prefix']}/bin/hello"], capture_output=True, text=True, check=True).stdout
        assert out.startswith("Hello 1.0 from " + pulled["prefix"])
        # by digest, under the pushed name: the cache has it all, no blob is fetched
        code, by_digest = _ctl_json(b, "pull", pushed["reference"])
        assert code == 0, by_digest
        assert by_digest["name"] == "tools" and by_digest["transferred"] == 0 and by_digest["skipped"] == 3
        assert by_digest["env_key"] == built["env_key"]
        # Pulled, pushed elsewhere on the same registry: its blobs are mounted from where it came from
        # (the archives are not in the cache, and the channel is gone).
        code, copied = _ctl_json(b, "push", "tools2", f"{registry.address}/team/copy:v1")
        assert code == 0, copied
        assert copied["mounted"] == 3 and copied["digest"] != pushed["digest"]  # another name annotation
        other = reg.LocalRegistry(tmp_path / "other").start()  # another registry: copied from the first
        try:
            code, promoted = _ctl_json(b, "push", "tools2", f"{other.address}/prod/tools:v1")
            assert code == 0, promoted
            assert promoted["transferred"] == 4 and promoted["env_key"] == built["env_key"]
        finally:
            other.stop()
        shutil.rmtree(b.home / "pkgs")  # the env is built here: a pull fetches no blob, even so
        code, third = _ctl_json(b, "pull", ref, "-n", "tools3")
        assert code == 0 and third["transferred"] == 0 and third["prefix"] == pulled["prefix"], third
    finally:
        assert b.stop() == 0


def test_second_env_uploads_only_new_blobs(registry: reg.LocalRegistry, tmp_path: Path, short_dir: Path) -> None:
    packages = [Pkg(f"shared{i}", "1.0", files={f"share/s{i}.txt": f"shared {i}\n"}) for i in range(6)]
    packages += [hello_pkg("only-a", "1.0"), hello_pkg("only-b", "1.0")]
    channel = build_channel(tmp_path / "channel", packages)
    shared = [f"shared{i}" for i in range(6)]
    first = write_project(tmp_path / "first", channel, [*shared, "only-a"])
    second = write_project(tmp_path / "second", channel, [*shared, "only-b"])
    d = _daemon(tmp_path, short_dir)
    try:
        _create(d, first, "first")
        _create(d, second, "second")
        code, one = _ctl_json(d, "push", "first", f"{registry.address}/dedupe/envs:first")
        assert code == 0, one
        before = len(registry.requests())
        code, two = _ctl_json(d, "push", "second", f"{registry.address}/dedupe/envs:second")
        assert code == 0, two
        asked = registry.requests()[before:]
        uploads = [r for r in asked if r.method in ("PUT", "PATCH") and "/blobs/uploads/" in r.path]
        # only-b and the second lock: two blobs uploaded; the six shared packages only HEAD-checked
        assert two["transferred"] == len(uploads) == 2, asked
        assert two["skipped"] == 6
        heads = [r for r in asked if r.method == "HEAD"]
        assert len(heads) == 8 and sum(r.status == 200 for r in heads) == 6
        # A third repository mounts the shared blobs instead of uploading them.
        before = len(registry.requests())
        code, three = _ctl_json(d, "push", "second", f"{registry.address}/dedupe/other:x",
                                "--mount-from", "dedupe/envs")
        assert code == 0, three
        asked = registry.requests()[before:]
        assert three["mounted"] == 7 and three["transferred"] == 1  # 7 packages mounted; the lock uploaded
        assert not [r for r in asked if r.method == "PATCH"]
    finally:
        assert d.stop() == 0


def test_chunked_upload_round_trips(registry: reg.LocalRegistry, tmp_path: Path, short_dir: Path) -> None:
    channel = build_channel(tmp_path / "channel", demo_packages())
    project = write_project(tmp_path / "proj", channel, ["greet-data"])
    d = _daemon(tmp_path, short_dir)
    try:
        _create(d, project, "data")
        before = len(registry.requests())
        code, pushed = _ctl_json(d, "push", "data", f"{registry.address}/chunked/data", "--chunk-size", "1048576")
        assert code == 0, pushed
        patches = [r for r in registry.requests()[before:] if r.method == "PATCH"]
        assert len(patches) >= 3 and all(r.status == 202 for r in patches)  # greet-data is about 3 MiB
        assert pushed["tags"] == [pushed["env_key"]]  # no tag given: the env_key
        shutil.rmtree(d.home / "pkgs")
        code, pulled = _ctl_json(d, "pull", f"{registry.address}/chunked/data:{pushed['env_key']}", "-n", "data2")
        assert code == 0, pulled
        assert pulled["env_key"] == pushed["env_key"]
    finally:
        assert d.stop() == 0


def test_corrupt_blob_refused_nothing_published(registry: reg.LocalRegistry, tmp_path: Path,
                                               short_dir: Path) -> None:
    channel = build_channel(tmp_path / "channel", [hello_pkg("victim", "1.0")])
    project = write_project(tmp_path / "proj", channel, ["victim"])
    d = _daemon(tmp_path, short_dir)
    try:
        built = _create(d, project, "victim")
        code, pushed = _ctl_json(d, "push", "victim", f"{registry.address}/corrupt/victim:v1")
        assert code == 0, pushed
        lock = d.client.get("/v1/envs/victim/lock")
        blob = registry.blob_file("sha256:" + lock["packages"][0]["sha256"])
        blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    finally:
        assert d.stop() == 0
    e = _daemon(tmp_path, short_dir, tag="e")
    try:
        code, out = _ctl_json(e, "pull", f"{registry.address}/corrupt/victim:v1")
        assert code == 65, out
        assert out["error"]["code"] == "digest-mismatch"
        assert "wrong content" in out["error"]["message"]
        assert e.client.get("/v1/envs")["envs"] == []
        assert not list((e.home / "envs").glob("*/conda-meta")) and not (e.home / "envs" / built["env_key"][:16]).exists()
        assert not [p for p in (e.home / "pkgs").iterdir() if not p.name.startswith(".")] \
            if (e.home / "pkgs").exists() else True
    finally:
        assert e.stop() == 0


def test_htpasswd_wrong_password_is_a_clear_error(tmp_path: Path, short_dir: Path) -> None:
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd (apache2-utils) is not installed")
    locked = reg.LocalRegistry(tmp_path / "locked", htpasswd=("ci", "right-password")).start()
    try:
        channel = build_channel(tmp_path / "channel", [hello_pkg("solo", "1.0")])
        project = write_project(tmp_path / "proj", channel, ["solo"])
        logins = tmp_path / "docker-config.json"

        def login(password: str) -> None:
            auth = base64.b64encode(f"ci:{password}".encode()).decode()
            logins.write_text(json.dumps({"auths": {locked.address: {"auth": auth}}}))

        login("wrong-password")
        d = _daemon(tmp_path, short_dir, auth_file=logins)
        try:
            _create(d, project, "solo")
            code, out, err = d.ctl("push", "solo", f"{locked.address}/private/solo:v1")
            assert code == 77
            assert f"registry {locked.address} refused the login of user 'ci'" in err
            assert "docker login" in err and "wrong-password" not in err + out
            assert "wrong-password" not in d.log.read_text()
            login("right-password")  # read again at the next request: no restart
            code, pushed = _ctl_json(d, "push", "solo", f"{locked.address}/private/solo:v1")
            assert code == 0, pushed
            logins.unlink()
            code, out, err = d.ctl("pull", f"{locked.address}/private/solo:v1", "-n", "again")
            assert code == 77 and "none is configured for it" in err
        finally:
            assert d.stop() == 0
    finally:
        locked.stop()


def test_bad_references_and_plain_http_rule(tmp_path: Path, short_dir: Path) -> None:
    d = _daemon(tmp_path, short_dir)
    try:
        code, _out, err = d.ctl("pull", "localhost:5000/Bad Repo")
        assert code == 64 and "is not a registry reference" in err
        status, answer = d.raw("POST", "/v1/pull", {"reference": "x/y@sha256:abc"})
        assert status == 400 and answer["error"]["code"] == "bad-reference"
        # A name no registry resolves, over HTTPS (not loopback): a clear registry error, exit 69.
        code, _out, err = d.ctl("pull", "registry.invalid/team/env:v1")
        assert code == 69 and "registry registry.invalid" in err and "--plain-http" in err
    finally:
        assert d.stop() == 0


def _skopeo() -> str:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.skip("skopeo is not installed (Debian: apt-get install skopeo; scripts/test does it as root)")
    return exe


def _chroot_argv(root: Path) -> list[str] | None:
    """How to run a command with ``root`` as /: chroot as root, else a user namespace (unshare -r)."""
    import os

    chroot, unshare = shutil.which("chroot"), shutil.which("unshare")
    if os.geteuid() == 0 and chroot:
        return [chroot, str(root)]
    if unshare and subprocess.run([unshare, "-r", "true"], capture_output=True).returncode == 0:
        return [unshare, "-r", f"--root={root}"]
    return None


def test_image_runs_its_entrypoint_and_skopeo_reads_it(registry: reg.LocalRegistry, tmp_path: Path,
                                                        short_dir: Path) -> None:
    skopeo = _skopeo()
    layout = reg.host_shell_layout(tmp_path / "base-layout")
    base = f"{registry.address}/bases/tiny-sh:1"
    subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:base", f"docker://{base}"],
                   check=True, capture_output=True)
    channel = build_channel(tmp_path / "channel", demo_packages())
    project = write_project(tmp_path / "proj", channel, ["hello 1.*"])
    d = _daemon(tmp_path, short_dir)
    try:
        built = _create(d, project, "tools")
        tag = f"{registry.address}/team/tools-image:v1"
        code, made = _ctl_json(d, "image", "tools", "--base", base, "--tag", tag)
        assert code == 0, made
        assert made["base_layers"] == {"skipped": 0, "mounted": 1, "copied": 0}  # same registry: mounted
        assert made["entrypoint"] == [f"{d.home}/bin/cold-start", "tools", "--"]
        inspected = json.loads(subprocess.run([skopeo, "inspect", "--tls-verify=false", f"docker://{tag}"],
                                              check=True, capture_output=True, text=True).stdout)
        assert len(inspected["Layers"]) == 3 and inspected["Digest"] == made["digest"]
        assert inspected["Labels"]["io.provisiond.env_key"] == built["env_key"]
        config = json.loads(subprocess.run([skopeo, "inspect", "--config", "--tls-verify=false", f"docker://{tag}"],
                                           check=True, capture_output=True, text=True).stdout)
        assert config["config"]["Entrypoint"] == made["entrypoint"]
        # The layers, unpacked in order into a directory, run the entrypoint there.
        copied = tmp_path / "copied"
        subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{tag}", f"dir:{copied}"],
                       check=True, capture_output=True)
        manifest = json.loads((copied / "manifest.json").read_text())
        root = tmp_path / "rootfs"
        root.mkdir()
        import tarfile

        for layer in manifest["layers"]:
            with tarfile.open(copied / layer["digest"].removeprefix("sha256:")) as tar:
                tar.extractall(root, filter="tar")
        argv = _chroot_argv(root)
        if argv is None:
            pytest.skip("neither chroot (as root) nor an unprivileged user namespace (unshare -r) is available")
        run = subprocess.run([*argv, *made["entrypoint"], "hello"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"Hello 1.0 from {built['prefix']}"
    finally:
        assert d.stop() == 0


def test_progress_events_stream_and_cli_lines(registry: reg.LocalRegistry, tmp_path: Path, short_dir: Path) -> None:
    channel = build_channel(tmp_path / "channel", demo_packages())
    project = write_project(tmp_path / "proj", channel, ["hello 1.*", "greet-data"])
    d = _daemon(tmp_path, short_dir)
    try:
        _create(d, project, "tools")
        ref = f"{registry.address}/progress/tools:v1"
        events = [json.loads(line[6:]) for line in d.client.stream("/v1/envs/tools/push", {"reference": ref})
                  if line.startswith("data: ")]
        phases = [e["phase"] for e in events]
        assert phases[0] == "started" and phases[1] == "start" and phases[-1] == "done"
        blobs = [e for e in events if e["phase"] == "blob"]
        assert sorted(e["action"] for e in blobs) == ["uploaded"] * 3
        assert events[-1]["result"]["transferred"] == 4
        assert max(e.get("bytes", 0) for e in events) >= 3 * 1024 * 1024  # greet-data's 3 MiB went by
        # The same operation, followed from a second connection, replays in full.
        replay = [json.loads(line[6:]) for line in d.client.stream(f"/v1/transfers/{events[0]['transfer_id']}/events")
                  if line.startswith("data: ")]
        assert [e["phase"] for e in replay] == phases[1:]
        # Pushed again: every blob is reported skipped.
        code, out, err = d.ctl("push", "tools", ref)
        assert code == 0, err
        assert err.count("skipped") == 3 and "uploaded" not in err  # stderr is not a terminal: a line per blob
        assert "4 blobs: 0 uploaded, 0 mounted, 4 already there" in out
        code, out, err = d.ctl("push", "tools", f"{registry.address}/progress/tools@sha256:{'0' * 64}")
        assert code == 64 and "push to a tag, not a digest" in err
        status, answer = d.raw("GET", "/v1/transfers/999/events")
        assert status == 404 and answer["error"]["code"] == "transfer-not-found"
    finally:
        assert d.stop() == 0


def test_registry_as_package_mirror_falls_back_to_the_channel(registry: reg.LocalRegistry, tmp_path: Path,
                                                              short_dir: Path) -> None:
    import asyncio

    from tests.conftest import serve_directory

    channel = build_channel(tmp_path / "channel", demo_packages())
    asyncio.run(reg.publish_mirror(registry.address, "mirrors/demo", channel, only={"hello", "libgreet"},
                                   with_repodata=False))
    fetched: list[str] = []
    with serve_directory(channel, before_get=fetched.append) as url:
        project = write_project(tmp_path / "proj", channel, ["hello 1.*", "greet-data"])
        (project / "environment.yml").write_text((project / "environment.yml").read_text()
                                                 .replace(channel.as_uri(), url))
        d = Daemon(home=tmp_path / "home", socket=short_dir / "m.sock")
        d.base_env.update(PROVISIOND_REGISTRY_AUTH_FILE=str(tmp_path / "none.json"),
                          PROVISIOND_MIRRORS=f"{url}=oci://{registry.address}/mirrors/demo")
        d.start()
        try:
            before = len(registry.requests())
            built = _create(d, project, "mirrored")
            assert built["status"] == "ready"
            archives = sorted(p.rsplit("/", 1)[-1] for p in fetched if p.endswith((".conda", ".tar.bz2")))
            assert archives == ["greet-data-1.0-0.conda"]  # not mirrored: from the channel
            blob_gets = [r for r in registry.requests()[before:] if r.method == "GET" and "/blobs/sha256:" in r.path]
            assert {r.path.split("/blobs/")[0] for r in blob_gets} == {"/v2/mirrors/demo/linux-64/hello",
                                                                        "/v2/mirrors/demo/linux-64/libgreet"}
            assert [p for p in fetched if "repodata" in p]  # the mirror has none: the channel's
            out = subprocess.run([f"{built['prefix']}/bin/hello"], capture_output=True, text=True, check=True).stdout
            assert out.startswith("Hello 1.0")
            log = d.client.get(f"/v1/builds/{d.client.get('/v1/envs/mirrored')['build_id']}/log")
            assert "mirror: 2 packages from the registry, 1 left to the channel" in log
        finally:
            assert d.stop() == 0


@contextlib.contextmanager
def token_proxy(upstream: str, user: str | None, password: str = "", *,
                flaky: bool = False) -> Iterator[tuple[str, list[str]]]:
    """A Bearer-token front for the registry, as ghcr.io or Harbor do: /v2/ wants a token, /token
    gives one for a scope against a Basic login. Yields its address and the scopes it issued.
    ``user`` None: no auth. ``flaky``: the first GET of each blob answers 503 (a registry restarting)."""
    import asyncio
    import threading

    from aiohttp import ClientSession, web

    issued: dict[str, str] = {}
    scopes: list[str] = []
    started = threading.Event()
    state: dict[str, object] = {}

    async def token(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"errors": [{"code": "DENIED"}]}, status=401)
        scope = request.query.get("scope", "")
        scopes.append(scope)
        issued[f"tok-{len(issued)}"] = scope
        return web.json_response({"token": f"tok-{len(issued) - 1}"})

    refused: set[str] = set()

    async def forward(request: web.Request) -> web.StreamResponse:
        if flaky and request.method == "GET" and "/blobs/" in request.path and request.path not in refused:
            refused.add(request.path)
            scopes.append(f"503 {request.path}")
            return web.Response(status=503, headers={"Retry-After": "0"})
        auth = request.headers.get("Authorization", "")
        repo = request.path.removeprefix("/v2/").split("/blobs/")[0].split("/manifests/")[0]
        granted = issued.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if user is not None and (granted is None or (request.path != "/v2/"
                                                     and not granted.startswith(f"repository:{repo}:"))):
            realm = f"http://{request.host}/token"
            return web.Response(status=401, headers={"WWW-Authenticate":
                                f'Bearer realm="{realm}",service="test",scope="repository:{repo}:pull,push"'})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "host")}
        headers["Host"] = request.host
        async with state["session"].request(request.method, f"http://{upstream}{request.path_qs}",  # type: ignore[union-attr]
                                             headers=headers, data=await request.read(),
                                             allow_redirects=False) as answer:
            body = await answer.read()
            keep = ("Location", "Docker-Content-Digest", "Content-Type", "Range", "Docker-Upload-UUID")
            return web.Response(status=answer.status, body=body,
                                headers={k: answer.headers[k] for k in keep if k in answer.headers})

    def serve() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop

        async def main() -> None:
            state["session"] = ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=1 << 30)
            app.router.add_get("/token", token)
            app.router.add_route("*", "/{tail:.*}", forward)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            state["runner"] = runner
            state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()

        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield f"127.0.0.1:{state['port']}", scopes
    finally:
        loop = state["loop"]

        async def close() -> None:
            await state["session"].close()  # type: ignore[union-attr]
            await state["runner"].cleanup()  # type: ignore[union-attr]

        asyncio.run_coroutine_threadsafe(close(), loop).result(30)  # type: ignore[arg-type]
        loop.call_soon_threadsafe(loop.stop)  # type: ignore[union-attr]
        thread.join(30)
        loop.close()  # type: ignore[union-attr]


def test_bearer_token_auth(registry: reg.LocalRegistry, tmp_path: Path, short_dir: Path) -> None:
    channel = build_channel(tmp_path / "channel", [hello_pkg("tok", "1.0")])
    project = write_project(tmp_path / "proj", channel, ["tok"])
    with token_proxy(registry.address, "robot", "s3cret") as (front, scopes):
        logins = tmp_path / "auth.json"
        logins.write_text(json.dumps({"auths": {front: {"username": "robot", "password": "s3cret"}}}))
        d = _daemon(tmp_path, short_dir, auth_file=logins)
        try:
            _create(d, project, "tok")
            code, pushed = _ctl_json(d, "push", "tok", f"{front}/bearer/tok:v1")
            assert code == 0, pushed
            assert scopes == ["repository:bearer/tok:pull,push"]  # one token, reused for every request
            code, pulled = _ctl_json(d, "pull", f"{front}/bearer/tok:v1", "-n", "tok2")
            assert code == 0, pulled
            assert pulled["env_key"] == pushed["env_key"] and len(scopes) == 2  # a new session, a new token
            logins.write_text(json.dumps({"auths": {front: {"username": "robot", "password": "nope"}}}))
            code, _out, err = d.ctl("pull", f"{front}/bearer/other:v1", "-n", "tok3")
            assert code == 77 and "the token service refused our login" in err and "nope" not in err
            assert "s3cret" not in d.log.read_text() and "tok-0" not in d.log.read_text()
        finally:
            assert d.stop() == 0


def test_a_registry_that_answers_503_is_asked_again(registry: reg.LocalRegistry, tmp_path: Path,
                                                   short_dir: Path) -> None:
    channel = build_channel(tmp_path / "channel", [hello_pkg("flaky", "1.0"), hello_pkg("steady", "1.0")])
    project = write_project(tmp_path / "proj", channel, ["flaky", "steady"])
    d = _daemon(tmp_path, short_dir)
    try:
        _create(d, project, "flaky")
        code, pushed = _ctl_json(d, "push", "flaky", f"{registry.address}/flaky/env:v1")
        assert code == 0, pushed
        with token_proxy(registry.address, None, flaky=True) as (front, refusals):
            code, pulled = _ctl_json(d, "pull", f"{front}/flaky/env:v1", "-n", "again")
            code2, again = _ctl_json(d, "pull", f"{front}/flaky/env:v1", "-n", "again")
        assert code == 0, pulled
        assert pulled["env_key"] == pushed["env_key"]
        assert len(refusals) == 1  # the config blob (the packages are cached): 503 once, then served
        assert code2 == 0 and again["transferred"] == 0
    finally:
        assert d.stop() == 0


def test_credential_helper_gives_the_login(tmp_path: Path, short_dir: Path) -> None:
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd (apache2-utils) is not installed")
    locked = reg.LocalRegistry(tmp_path / "locked", htpasswd=("helper-user", "helper-secret")).start()
    try:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        asked = tmp_path / "asked"
        helper = bin_dir / "docker-credential-fake"  # a real executable, as docker runs one
        helper.write_text(f"""#!/bin/sh
[ "$1" = get ] || exit 1
read -r server
printf '%s\\n' "$server" >> {asked}
[ "$server" = "{locked.address}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
printf '{{"ServerURL": "%s", "Username": "helper-user", "Secret": "helper-secret"}}' "$server"
""")
        helper.chmod(0o755)
        logins = tmp_path / "config.json"
        logins.write_text(json.dumps({"auths": {}, "credHelpers": {locked.address: "fake"}}))
        channel = build_channel(tmp_path / "channel", [hello_pkg("helped", "1.0")])
        project = write_project(tmp_path / "proj", channel, ["helped"])
        d = Daemon(home=tmp_path / "home", socket=short_dir / "h.sock")
        d.base_env.update(PROVISIOND_REGISTRY_AUTH_FILE=str(logins),
                          PATH=f"{bin_dir}:{d.base_env.get('PATH', '/usr/bin:/bin')}")
        d.start()
        try:
            _create(d, project, "helped")
            code, pushed = _ctl_json(d, "push", "helped", f"{locked.address}/private/helped:v1")
            assert code == 0, pushed
            assert asked.read_text().splitlines() == [locked.address]  # once for the whole push
            assert "helper-secret" not in d.log.read_text()
        finally:
            assert d.stop() == 0
    finally:
        locked.stop()


def test_repodata_and_packages_from_the_mirror_no_channel_request(registry: reg.LocalRegistry, tmp_path: Path,
                                                                  short_dir: Path) -> None:
    import asyncio

    from tests.conftest import serve_directory

    channel = build_channel(tmp_path / "channel", demo_packages())
    asyncio.run(reg.publish_mirror(registry.address, "mirrors/full", channel))
    fetched: list[str] = []
    with serve_directory(channel, before_get=fetched.append) as url:
        project = write_project(tmp_path / "proj", channel, ["hello 2.*", "greet-data"])
        spec = project / "environment.yml"
        spec.write_text(spec.read_text().replace(channel.as_uri(), url))
        d = Daemon(home=tmp_path / "home", socket=short_dir / "r.sock")
        d.base_env.update(PROVISIOND_REGISTRY_AUTH_FILE=str(tmp_path / "none.json"),
                          PROVISIOND_MIRRORS=f"{url}=oci://{registry.address}/mirrors/full")
        d.start()
        try:
            built = _create(d, project, "all-mirrored")
            assert fetched == []  # neither repodata nor a package came from the channel
            lock = d.client.get("/v1/envs/all-mirrored/lock")
            assert {p["channel"] for p in lock["packages"]} == {url}  # the lock names the channel, not the copy
            assert all(p["url"].startswith(url) for p in lock["packages"])
            assert {p["name"]: p["version"] for p in lock["packages"]}["hello"] == "2.0"
        finally:
            assert d.stop() == 0
        # The same file without the mirror: the same env_key, everything from the channel.
        e = _daemon(tmp_path, short_dir, tag="nomirror")
        try:
            assert _create(e, project, "plain")["env_key"] == built["env_key"]
            assert any(p.endswith("repodata.json") for p in fetched)
        finally:
            assert e.stop() == 0


def test_image_copies_a_base_from_another_registry(registry: reg.LocalRegistry, tmp_path: Path,
                                                   short_dir: Path) -> None:
    skopeo = _skopeo()
    other = reg.LocalRegistry(tmp_path / "other").start()
    try:
        layout = reg.host_shell_layout(tmp_path / "base-layout")
        base = f"{other.address}/bases/tiny-sh:1"
        subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:base", f"docker://{base}"],
                       check=True, capture_output=True)
        channel = build_channel(tmp_path / "channel", [hello_pkg("imaged", "1.0")])
        project = write_project(tmp_path / "proj", channel, ["imaged"])
        d = _daemon(tmp_path, short_dir)
        try:
            _create(d, project, "imaged")
            tag = f"{registry.address}/team/imaged:v1"
            code, made = _ctl_json(d, "image", "imaged", "--base", base, "--tag", tag)
            assert code == 0, made
            assert made["base_layers"] == {"skipped": 0, "mounted": 0, "copied": 1}
            code, again = _ctl_json(d, "image", "imaged", "--base", base, "--tag", tag)
            assert code == 0 and again["base_layers"] == {"skipped": 1, "mounted": 0, "copied": 0}
            assert again["digest"] == made["digest"]  # the same env and base: the same image
            inspected = json.loads(subprocess.run([skopeo, "inspect", "--tls-verify=false", f"docker://{tag}"],
                                                  check=True, capture_output=True, text=True).stdout)
            assert len(inspected["Layers"]) == 3
        finally:
            assert d.stop() == 0
    finally:
        other.stop()
