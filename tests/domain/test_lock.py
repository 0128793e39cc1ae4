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
    assert LOCK.env_key == "205483eb9acb94b8e568e748bdc71a127f2c859f6e946ba3bc16cd99c1b0707b"


def test_canonical_json_golden() -> None:
    text = LOCK.to_json()
    assert text.startswith('{"channels":[],"engine":"rattler","env_key":"205483eb')
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert [p["name"] for p in json.loads(text)["packages"]] == ["python", "zlib"]


def test_env_key_ignores_order_engine_and_metadata_but_not_hashes() -> None:
    same = Lock(platform="linux-64", packages=(pkg("python", "3.11.7"), pkg("zlib")), engine="micromamba",
                channels=("x",), meta={"source": "elsewhere"})
    assert same.env_key == LOCK.env_key
    other_hash = Lock(platform="linux-64", packages=(pkg("python", "3.11.7"), pkg("zlib", sha="cc")))
    assert other_hash.env_key != LOCK.env_key
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
    payload = ('{"packages":[["' + base + 'python-3.11.7-0.conda","' + "aa" * 32 + '",""],["'
               + base + 'zlib-1.0-0.conda","' + "aa" * 32 + '",""]],"platform":"linux-64","scheme":1}')
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
    assert lock.env_key == "6b5d8a5adadca0d294533573804334aeec20843d72c46881392e2044ee1ed1bf"
    base = "https://conda.anaconda.org/conda-forge/linux-64/"
    payload = ('{"packages":[["' + base + 'python-3.11.7-0.conda","' + "aa" * 32 + '",""],["'
               + base + 'zlib-1.0-0.conda","' + "aa" * 32 + '",""]],'
               '"pip":[["gitlib","1.2.0","git+https://example.org/gitlib.git@' + "ab" * 20 + '"],'
               '["proj","","-e /home/u/proj"],["tinylib","1.0","sha256:' + "cc" * 32 + '"]],'
               '"platform":"linux-64","scheme":1}')
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
