"""A real OCI registry for tests and benchmarks: Debian's ``docker-registry`` (CNCF distribution).

Started on a loopback port with its storage in a temp dir and its access log in a file, so a test
can count the requests a push made (``requests()``). ``htpasswd=(user, password)`` turns on basic
auth (the file is written with apache2-utils' ``htpasswd -B``).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

EXE = "docker-registry"
_ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3})')


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    status: int


def missing() -> str | None:
    """Why a registry cannot start here (None: it can)."""
    if shutil.which(EXE) is None:
        return f"{EXE} is not installed (Debian: apt-get install docker-registry; scripts/test does it as root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1:PORT; ``address`` is what references start with."""

    def __init__(self, root: Path, *, htpasswd: tuple[str, str] | None = None) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        self.htpasswd = htpasswd
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        auth = ""
        if self.htpasswd is not None:
            if shutil.which("htpasswd") is None:
                raise RuntimeError("htpasswd (apache2-utils) is needed for a registry with a password")
            line = subprocess.run(["htpasswd", "-Bbn", *self.htpasswd], check=True, capture_output=True).stdout
            (self.root / "htpasswd").write_bytes(line)
            auth = f"auth:\n  htpasswd:\n    realm: provisiond-tests\n    path: {self.root / 'htpasswd'}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n{auth}")
        return config

    def start(self, timeout: float = 30) -> LocalRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([EXE, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2).close()
                return self
            except urllib.error.HTTPError as exc:  # 401 with auth on: it answers
                exc.close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{EXE} did not start:\n{self.log.read_text(errors='replace')[-2000:]}"
                                       ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def requests(self) -> list[Request]:
        """Every request the registry answered so far, from its access log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [Request(m[1], m[2], int(m[3])) for m in _ACCESS.finditer(text)]

    def blob_files(self) -> list[Path]:
        """The blobs it stores (data/docker/registry/v2/blobs/sha256/xx/<hex>/data)."""
        return sorted((self.root / "data").glob("docker/registry/v2/blobs/sha256/*/*/data"))

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "data" / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def host_shell_layout(out: Path, tag: str = "base") -> Path:
    """An OCI image layout (``oci:DIR:TAG`` for skopeo) of a tiny base image: the host's ``/bin/sh``
    and the shared libraries it loads, nothing else. A real base image without the network."""
    import gzip
    import hashlib
    import io
    import json
    import os
    import platform
    import tarfile

    sh = os.path.realpath("/bin/sh")
    files = {sh: sh}
    for line in subprocess.run(["ldd", sh], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            files[path] = os.path.realpath(path)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in [*files, "/bin/sh", "/tmp/x"]})
        for d in dirs:
            for parent in [*reversed(Path(d).parents[:-1]), Path(d)]:
                name = str(parent).lstrip("/")
                if name and name not in tar.getnames():
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                    tar.addfile(info)
        for path, real in files.items():
            tar.add(real, arcname=path.lstrip("/"))
        if "bin/sh" not in tar.getnames():
            info = tarfile.TarInfo("bin/sh")
            info.type, info.linkname = tarfile.SYMTYPE, sh
            tar.addfile(info)
    diff_id = hashlib.sha256(raw.getvalue()).hexdigest()
    layer = gzip.compress(raw.getvalue(), mtime=0)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps({"architecture": arch, "os": "linux",
                         "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}).encode()
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": blob(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": blob(layer), "size": len(layer)}]}).encode()
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return out


async def publish_mirror(address: str, base: str, channel: Path, only: set[str] | None = None, *,
                         with_repodata: bool = True) -> list[str]:
    """Mirror a local channel into the registry at ``address`` in conda-forge's OCI layout
    (``<base>/<subdir>/<name>:<version>-<build>``, plus ``repodata.json:latest`` per subdir unless
    not ``with_repodata``). ``only``: the package names to mirror (default all). Returns the repositories written."""
    import json

    from provisiond.daemon.oci.auth import Logins
    from provisiond.daemon.oci.client import Registry, session
    from provisiond.domain.oci import (
        MANIFEST,
        REPODATA,
        canonical,
        descriptor,
        digest_of,
        mirror_repository,
        package_media_type,
        parse_reference,
        tag_of,
    )

    written = []
    async with session() as s:
        registry = Registry(s, parse_reference(f"{address}/{base}"), Logins([]))
        for subdir in sorted(p for p in channel.iterdir() if (p / "repodata.json").is_file()):
            repodata = (subdir / "repodata.json").read_bytes()
            records = json.loads(repodata)
            entries = {**records.get("packages", {}), **records.get("packages.conda", {})}
            for file_name, record in sorted(entries.items()):
                if only is not None and record["name"] not in only:
                    continue
                archive = (subdir / file_name).read_bytes()
                repo = mirror_repository(base, subdir.name, record["name"])
                index = canonical({k: v for k, v in record.items() if k not in ("sha256", "md5", "size")})
                config = b"{}"
                blobs = [(package_media_type(file_name), archive),
                         ("application/vnd.conda.info.index.v1+json", index)]
                layers = []
                for media, data in blobs:
                    digest = digest_of(data)
                    if not await registry.has_blob(repo, digest):
                        await registry.upload(repo, digest, data, len(data))
                    layers.append(descriptor(media, digest, len(data),
                                             {"org.opencontainers.image.title": file_name}))
                await registry.upload(repo, digest_of(config), config, len(config))
                manifest = canonical({"schemaVersion": 2, "mediaType": MANIFEST,
                                      "config": descriptor("application/vnd.oci.image.config.v1+json",
                                                           digest_of(config), len(config)),
                                      "layers": layers})
                await registry.put_manifest(repo, tag_of(record["version"], record["build"]), manifest, MANIFEST)
                written.append(repo)
            if not with_repodata:
                continue
            repo = f"{base}/{subdir.name}/repodata.json"
            await registry.upload(repo, digest_of(repodata), repodata, len(repodata))
            await registry.upload(repo, digest_of(b"{}"), b"{}", 2)
            await registry.put_manifest(repo, "latest", canonical({
                "schemaVersion": 2, "mediaType": MANIFEST,
                "config": descriptor("application/vnd.oci.image.config.v1+json", digest_of(b"{}"), 2),
                "layers": [descriptor(REPODATA, digest_of(repodata), len(repodata))]}), MANIFEST)
    return written
