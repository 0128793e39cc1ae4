"""References, the plain-HTTP rule, the mirror layout and the env manifest check (domain/oci.py)."""

from __future__ import annotations

import pytest

from provisiond.domain.oci import (
    LOCK_CONFIG,
    ArtifactError,
    BadReferenceError,
    Reference,
    check_env_manifest,
    image_platform,
    is_loopback,
    mirror_repository,
    parse_reference,
    tag_of,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost:5000/team/envs:v1", Reference("localhost:5000", "team/envs", "v1")),
    ("127.0.0.1:5000/envs", Reference("127.0.0.1:5000", "envs")),
    ("ghcr.io/org/envs@" + DIGEST, Reference("ghcr.io", "org/envs", None, DIGEST)),
    ("ghcr.io/org/envs:v2@" + DIGEST, Reference("ghcr.io", "org/envs", "v2", DIGEST)),
    ("debian:bookworm", Reference("docker.io", "library/debian", "bookworm")),
    ("org/image", Reference("docker.io", "org/image")),
    ("oci://Registry.Example:443/a/b_c/d-e:1.0", Reference("registry.example:443", "a/b_c/d-e", "1.0")),
])
def test_references_read_as_docker_reads_them(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_reference_parts() -> None:
    ref = parse_reference("localhost:5000/team/envs:v1")
    assert (ref.reference, ref.host, ref.endpoint) == ("v1", "localhost", "localhost:5000")
    assert str(ref.with_tag(None, DIGEST)) == f"localhost:5000/team/envs@{DIGEST}"
    assert parse_reference("debian").endpoint == "registry-1.docker.io"
    assert parse_reference("x.io/a").reference == "latest"


@pytest.mark.parametrize("text", ["localhost:5000/Team", "localhost:5000/a b", "x.io/a:-bad", "x.io/a@sha256:12",
                                  "", "x.io/", "x.io/a//b"])
def test_bad_references(text: str) -> None:
    with pytest.raises(BadReferenceError):
        parse_reference(text)


@pytest.mark.parametrize(("host", "loopback"), [("localhost:5000", True), ("127.0.0.1", True), ("127.8.9.1:80", True),
                                                ("[::1]:5000", True), ("10.0.0.1:5000", False),
                                                ("ghcr.io", False), ("localhost.evil.com", False)])
def test_plain_http_only_for_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_mirror_layout_as_conda_forge_and_rattler() -> None:
    assert tag_of("1.2.3+cuda", "py_0") == "1.2.3__p__cuda-py_0"
    assert tag_of("1!2.0", "h=1") == "1__e__2.0-h__eq__1"
    assert mirror_repository("channel-mirrors/conda-forge/", "linux-64", "xtensor") == \
        "channel-mirrors/conda-forge/linux-64/xtensor"
    assert mirror_repository("m", "noarch", "_libgcc_mutex") == "m/noarch/zzz_libgcc_mutex"
    assert image_platform("linux-64") == ("linux", "amd64")
    assert image_platform("linux-aarch64") == ("linux", "arm64")
    assert image_platform("osx-arm64") == ("darwin", "arm64")


def test_env_manifest_check() -> None:
    good = {"config": {"mediaType": LOCK_CONFIG, "digest": DIGEST, "size": 1},
            "layers": [{"mediaType": "application/vnd.conda.package.v2", "digest": DIGEST, "size": 3}]}
    assert check_env_manifest(good, "r") is good
    with pytest.raises(ArtifactError, match="not a provisiond env"):
        check_env_manifest({**good, "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}}, "r")
    with pytest.raises(ArtifactError, match="without a sha256 digest"):
        check_env_manifest({**good, "layers": [{"digest": "md5:x", "size": 1}]}, "r")
    with pytest.raises(ArtifactError, match="not an OCI image manifest"):
        check_env_manifest([], "r")
