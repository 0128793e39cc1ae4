"""Lock canonical form and env_key: pinned by golden values so they never change silently."""

from __future__ import annotations

import json

import pytest

from provisiond.domain.lock import Lock, LockFormatError, Package, PipPackage


def pkg(name: str, version: str = "1.0", sha: str = "aa") -> Package:
    return Package(name=name, version=version, build="0", build_number=0, subdir="linux-64",
                   channel="https://conda.anaconda.org/conda-forge/",
                   url=f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-0.conda",
                   file_name=f"{name}-{version}-0.conda", sha256=sha * 32, md5="bb" * 16, size=10,
                   depends=("libc >=1",))


LOCK = Lock(platform="linux-64", packages=(pkg("zlib"), pkg("python", "3.11.7")), engine="rattler")


def test_env_key_golden() -> None:
    assert LOCK.env_key == "0a9a0400f6abecd60ca060f4d224246a488a1f10c4007e507846f3e0e13121a0"


def test_canonical_json_golden() -> None:
    text = LOCK.to_json()
    assert text.startswith('{"channels":[],"engine":"rattler","env_key":"0a9a0400')
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert [p["name"] for p in json.loads(text)["packages"]] == ["python", "zlib"]


def test_env_key_ignores_order_engine_metadata_and_hash_fields() -> None:
    same = Lock(platform="linux-64", packages=(pkg("python", "3.11.7"), pkg("zlib")), engine="micromamba",
                channels=("x",), meta={"source": "elsewhere"})
    assert same.env_key == LOCK.env_key
    # Hashes are checked at install, they are not the identity: md5 only, sha256 only, both.
    from dataclasses import replace

    for hashes in ({"md5": None}, {"sha256": None}, {"sha256": "cc" * 32}):
        other = Lock(platform="linux-64", packages=tuple(replace(p, **hashes) for p in LOCK.packages))
        assert other.env_key == LOCK.env_key, hashes
    other_version = Lock(platform="linux-64", packages=(pkg("python", "3.11.8"), pkg("zlib")))
    assert other_version.env_key != LOCK.env_key
    other_platform = Lock(platform="osx-arm64", packages=LOCK.packages)
    assert other_platform.env_key != LOCK.env_key


def test_round_trip() -> None:
    again = Lock.from_json(LOCK.to_json())
    assert again == LOCK and again.to_json() == LOCK.to_json()


@pytest.mark.parametrize("text", ['{"version": 99, "platform": "x", "packages": []}', "[]", "{", '{"version": 1}'])
def test_foreign_or_broken_locks_are_clear_errors(text: str) -> None:
    with pytest.raises(LockFormatError):
        Lock.from_json(text)


def test_env_key_is_sha256_of_our_own_payload() -> None:
    import hashlib

    base = "https://conda.anaconda.org/conda-forge/linux-64/"
    payload = ('{"packages":["' + base + 'python-3.11.7-0.conda","' + base + 'zlib-1.0-0.conda"],'
               '"platform":"linux-64","scheme":2}')
    assert LOCK.env_key == hashlib.sha256(payload.encode()).hexdigest()


def pip_lock(**overrides: object) -> Lock:
    pins = {
        "tinylib": PipPackage("tinylib", "1.0", "https://files.example.org/tinylib-1.0-py3-none-any.whl",
                              sha256="cc" * 32),
        "gitlib": PipPackage("gitlib", "1.2.0", "git+https://example.org/gitlib.git@" + "ab" * 20),
        "proj": PipPackage("proj", "", "file:///home/u/proj", editable="/home/u/proj"),
    }
    pins.update(overrides)  # type: ignore[arg-type]
    return Lock(platform="linux-64", packages=LOCK.packages, engine="rattler", pip=tuple(pins.values()),
                pip_options=("--index-url https://pypi.org/simple",))


def test_env_key_with_pip_golden() -> None:
    import hashlib

    lock = pip_lock()
    assert lock.env_key == "2e5b711174d060e98869aa71e016b66d6bc62d9713c84e5835b2a74c2cb307ab"
    base = "https://conda.anaconda.org/conda-forge/linux-64/"
    payload = ('{"packages":["' + base + 'python-3.11.7-0.conda","' + base + 'zlib-1.0-0.conda"],'
               '"pip":[["gitlib","1.2.0","git+https://example.org/gitlib.git@' + "ab" * 20 + '"],'
               '["proj","","-e /home/u/proj"],["tinylib","1.0","sha256:' + "cc" * 32 + '"]],'
               '"platform":"linux-64","scheme":2}')
    assert lock.env_key == hashlib.sha256(payload.encode()).hexdigest()


def test_pip_pins_are_part_of_env_key_but_not_their_urls_or_index_options() -> None:
    lock = pip_lock()
    assert lock.env_key != LOCK.env_key
    # The same wheel (same hash) from another mirror or find-links dir is the same env.
    moved = PipPackage("tinylib", "1.0", "file:///srv/wheels/tinylib-1.0-py3-none-any.whl", sha256="cc" * 32)
    assert pip_lock(tinylib=moved).env_key == lock.env_key
    assert Lock(platform="linux-64", packages=LOCK.packages, pip=lock.pip).env_key == lock.env_key
    other_project = PipPackage("proj", "", "file:///home/v/proj", editable="/home/v/proj")
    assert pip_lock(proj=other_project).env_key != lock.env_key
    newer = PipPackage("tinylib", "1.1", "https://files.example.org/tinylib-1.1-py3-none-any.whl", sha256="dd" * 32)
    assert pip_lock(tinylib=newer).env_key != lock.env_key


def test_round_trip_with_pip() -> None:
    lock = pip_lock()
    again = Lock.from_json(lock.to_json())
    assert again == lock and again.to_json() == lock.to_json()
    assert [p.name for p in again.pip] == ["gitlib", "proj", "tinylib"]
    assert again.pip_options == ("--index-url https://pypi.org/simple",)
    wire = json.loads(lock.to_json())
    assert wire["pip"][1] == {"name": "proj", "version": "", "url": "file:///home/u/proj", "editable": "/home/u/proj"}
    assert [p.requirement for p in again.pip] == [
        "gitlib @ git+https://example.org/gitlib.git@" + "ab" * 20,
        "-e file:///home/u/proj",
        f"tinylib @ https://files.example.org/tinylib-1.0-py3-none-any.whl --hash=sha256:{'cc' * 32}",
    ]


def test_env_key_ignores_channel_credentials() -> None:
    """A rotated token is the same env, and a bundled lock (credentials stripped) keeps its key."""
    from dataclasses import replace

    secret = Lock(platform="linux-64", packages=tuple(
        replace(p, url=p.url.replace("https://", "https://bob:tok@").replace("/conda-forge/", "/t/abc/conda-forge/"))
        for p in LOCK.packages))
    assert secret.env_key == LOCK.env_key


@pytest.mark.parametrize("spelling", [
    "http://conda.anaconda.org/conda-forge/linux-64/{f}",
    "HTTPS://Conda.Anaconda.ORG/conda-forge/linux-64/{f}",
    "https://conda.anaconda.org:443/conda-forge/linux-64/{f}",
    "https://bob:s3cret@conda.anaconda.org/t/tok-1/conda-forge/linux-64/{f}",
    "https://conda.anaconda.org/conda-forge//linux-64/{f}",
    "https://conda.anaconda.org/conda-forge/linux-64/{q}",
])
def test_env_key_ignores_url_spelling(spelling: str) -> None:
    from dataclasses import replace
    from urllib.parse import quote

    def respell(p: Package) -> Package:
        escaped = quote(p.file_name, safe="").replace(".", "%2E", 1)
        return replace(p, url=spelling.format(f=p.file_name, q=escaped))

    other = Lock(platform="linux-64", packages=tuple(respell(p) for p in LOCK.packages))
    assert other.env_key == LOCK.env_key
    moved = Lock(platform="linux-64", packages=tuple(replace(p, url=p.url.replace("conda-forge", "other"))
                                                     for p in LOCK.packages))
    assert moved.env_key != LOCK.env_key
