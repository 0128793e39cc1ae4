"""One answer: the same file and channels give the same records and env_key under both engines.

Real engines (rattler in process, the real micromamba binary) on real local channels built for
the cases where micromamba 2.x alone would differ: forced pip, flexible priority, ``channel::pkg``
under strict (docs/micromamba.md "What provisiond corrects"). Tests named ``test_micromamba_*``
check micromamba's own behaviour and run only against it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provisiond.config.settings import Settings, load_settings
from provisiond.domain.lock import Lock
from provisiond.domain.spec import parse_spec
from provisiond.engines.base import Engine
from provisiond.engines.choose import engine_for
from provisiond.testing.channel import Pkg, build_channel
from provisiond.testing.micromamba import MISSING, find_test_micromamba

MICROMAMBA = find_test_micromamba()
needs_micromamba = pytest.mark.skipif(MICROMAMBA is None, reason=MISSING)


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A: python, pip and friends; B: newer zlib and pkg; N: python without pip; C/D: exact ties."""
    root = tmp_path_factory.mktemp("agree")
    return {
        "A": build_channel(root / "A", [
            Pkg("python", "3.11.0"), Pkg("python", "3.10.0"),
            Pkg("pip", "24.0", depends=("python", "setuptools"), noarch=True),
            Pkg("setuptools", "70.0", depends=("python",), noarch=True),
            Pkg("zlib", "1.0"), Pkg("pkg", "1.0"), Pkg("app", "1.0", depends=("zlib",)),
            Pkg("numpyish", "1.0", depends=("python",)), Pkg("needs-pip", "1.0", depends=("pip",), noarch=True)]),
        "B": build_channel(root / "B", [Pkg("zlib", "2.0"), Pkg("pkg", "2.0"), Pkg("pkg", "1.5"),
                                        Pkg("other", "1.0", depends=("zlib",)),
                                        Pkg("pinned-noarch", "1.0", noarch=True)]),
        "N": build_channel(root / "N", [Pkg("python", "3.12.0"), Pkg("numpyish", "1.0", depends=("python",))]),
        "C": build_channel(root / "C", [Pkg("tie", "1.0", files={"share/c": "c"}),
                                        Pkg("bn", "1.0", build="1", build_number=1)]),
        "D": build_channel(root / "D", [Pkg("tie", "1.0", files={"share/d": "d"}),
                                        Pkg("bn", "1.0", build="2", build_number=2),
                                        Pkg("pinned-noarch", "1.0", noarch=True, files={"share/d": "d"})]),
    }


def settings_for(home: Path, variant: str, **extra: str) -> Settings:
    """``variant``: an engine name, or ``micromamba+micromamba`` (``micromamba_install = micromamba``)."""
    engine, _, linker = variant.partition("+")
    values = {"home": str(home), "socket": "/tmp/pvd-unused.sock", "engine": engine,
              **({"micromamba_install": linker} if linker else {}), **extra}
    if engine == "micromamba":
        if MICROMAMBA is None:
            pytest.skip(MISSING)
        values["micromamba_path"] = str(MICROMAMBA)
    return load_settings(values, environ={}, config_file=home.parent / "none.toml")


def engine_on(home: Path, name: str, **extra: str) -> Engine:
    """A real engine on the store at ``home`` (micromamba's HOME is a temp dir: environments.txt)."""
    user = home.parent / "user-home"
    user.mkdir(parents=True, exist_ok=True)
    engine = engine_for(settings_for(home, name, **extra), {**os.environ, "HOME": str(user)})
    assert engine.name == name.partition("+")[0]
    return engine


def text_of(channels: dict[str, Path], names: list[str], deps: list[str], priority: str = "strict") -> str:
    lines = [f"channel_priority: {priority}", "channels:", *[f"  - {channels[n].as_uri()}" for n in names],
             "dependencies:", *[f"  - {d.format(**{k: v.as_uri() for k, v in channels.items()})}" for d in deps]]
    return "\n".join(lines) + "\n"


def summary(lock: Lock) -> list[tuple[str, str, str]]:
    return [(p.name, p.version, p.channel.rstrip("/").rsplit("/", 1)[-1]) for p in lock.packages]


CASES = {
    # forced pip: micromamba >= 2.6 adds pip to any request whose spec string starts with "python"
    "python-alone": (["A"], ["python"], "strict", [("python", "3.11.0", "A")]),
    "python-pinned": (["A"], ["python=3.10"], "strict", [("python", "3.10.0", "A")]),
    "python-range": (["A"], ["python >=3.10,<3.11"], "strict", [("python", "3.10.0", "A")]),
    "python-channel-without-pip": (["N"], ["python"], "strict", [("python", "3.12.0", "N")]),
    "python-through-a-dependency": (["A"], ["numpyish", "python"], "strict",
                                    [("numpyish", "1.0", "A"), ("python", "3.11.0", "A")]),
    "pip-asked-for": (["A"], ["python", "pip"], "strict",
                      [("pip", "24.0", "A"), ("python", "3.11.0", "A"), ("setuptools", "70.0", "A")]),
    "pip-needed-by-a-package": (["A"], ["python", "needs-pip"], "strict",
                                [("needs-pip", "1.0", "A"), ("pip", "24.0", "A"), ("python", "3.11.0", "A"),
                                 ("setuptools", "70.0", "A")]),
    # priorities
    "strict": (["A", "B"], ["app", "other"], "strict",
               [("app", "1.0", "A"), ("other", "1.0", "B"), ("zlib", "1.0", "A")]),
    "flexible-best-version-across-channels": (["A", "B"], ["app", "other"], "flexible",
                                              [("app", "1.0", "A"), ("other", "1.0", "B"), ("zlib", "2.0", "B")]),
    "flexible-exact-tie-goes-to-the-first-channel": (["C", "D"], ["tie", "bn"], "flexible",
                                                     [("bn", "1.0", "D"), ("tie", "1.0", "C")]),
    "flexible-tie-other-order": (["D", "C"], ["tie"], "flexible", [("tie", "1.0", "D")]),
    # channel::pkg pins
    "strict-pin-to-a-lower-channel": (["A", "B"], ["{B}::pkg", "app"], "strict",
                                      [("app", "1.0", "A"), ("pkg", "2.0", "B"), ("zlib", "1.0", "A")]),
    "strict-pin-with-a-version": (["A", "B"], ["{B}::pkg <2", "other"], "strict",
                                  [("other", "1.0", "B"), ("pkg", "1.5", "B"), ("zlib", "1.0", "A")]),
    "strict-pin-to-a-channel-not-listed": (["A"], ["{B}::pkg", "app"], "strict",
                                           [("app", "1.0", "A"), ("pkg", "2.0", "B"), ("zlib", "1.0", "A")]),
    "strict-pin-to-the-first-channel": (["A", "B"], ["{A}::pkg"], "strict", [("pkg", "1.0", "A")]),
    "strict-pins-to-two-channels": (["A", "C"], ["{B}::pkg", "{D}::tie"], "strict",
                                    [("pkg", "2.0", "B"), ("tie", "1.0", "D")]),
    "strict-pin-noarch": (["B", "D"], ["{D}::pinned-noarch"], "strict", [("pinned-noarch", "1.0", "D")]),
    "flexible-pin": (["B", "A"], ["{A}::zlib"], "flexible", [("zlib", "1.0", "A")]),
    # libmamba reads name=1.0=build as "starts with 1.0": rattler's exact meaning is passed
    "exact-version-and-build": (["A", "B"], ["zlib=1.0=0"], "flexible", [("zlib", "1.0", "A")]),
}


@needs_micromamba
@pytest.mark.parametrize("case", list(CASES))
async def test_engines_agree_on_records_and_env_key(case: str, channels: dict[str, Path], tmp_path: Path) -> None:
    names, deps, priority, expected = CASES[case]
    spec = parse_spec(text_of(channels, names, deps, priority))
    locks = {name: await engine_on(tmp_path / name / "home", name).solve(spec) for name in ("rattler", "micromamba")}
    assert summary(locks["rattler"]) == expected  # the answer both must give
    assert locks["micromamba"].packages == locks["rattler"].packages
    assert locks["micromamba"].env_key == locks["rattler"].env_key


def raw_create(channels: dict[str, Path], tmp_path: Path, *specs: str, channel: str = "A") -> list[str]:
    """What the bare binary links for ``specs`` (a dry run), to pin down the behaviour we correct."""
    run = subprocess.run([str(MICROMAMBA), "create", "--dry-run", "--json", "-y", "--no-rc", "-r",
                          str(tmp_path / "root"), "-p", str(tmp_path / "p"), "--override-channels",
                          "-c", channels[channel].as_uri(), *specs],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "HOME": str(tmp_path), "MAMBA_ADD_PIP_AS_PYTHON_DEPENDENCY": "false"})
    import json
    doc = json.loads(run.stdout[run.stdout.find("{"):])
    return sorted(r["name"] for r in (doc.get("actions") or {}).get("LINK") or ()) if doc.get("success") else []


@needs_micromamba
def test_micromamba_adds_pip_to_python_but_not_to_its_bracket_form(channels: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    """The upstream behaviour the engine works around (if a release drops it, this says so)."""
    assert raw_create(channels, tmp_path, "python") == ["pip", "python", "setuptools"]
    assert raw_create(channels, tmp_path, "python=3.10") == ["pip", "python", "setuptools"]
    assert raw_create(channels, tmp_path, "python[version='3.10.*']") == ["python"]
    assert raw_create(channels, tmp_path, "python", channel="N") == []  # no pip there: unsolvable
    assert raw_create(channels, tmp_path, "python[]", channel="N") == ["python"]


@needs_micromamba
async def test_micromamba_strict_pin_overlay_holds_clean_urls_only(channels: dict[str, Path], tmp_path: Path) -> None:
    """The pinned records' local channel points at the real one, and keeps no credentials."""
    engine = engine_on(tmp_path / "home", "micromamba")
    spec = parse_spec(text_of(channels, ["A", "B"], ["{B}::pkg"]))
    lock = await engine.solve(spec)
    assert [(p.name, p.url) for p in lock.packages] == [("pkg", f"{channels['B'].as_uri()}/linux-64/pkg-2.0-0.conda")]
    overlays = list((tmp_path / "home" / "mamba-root" / "pins").glob("*/linux-64/repodata.json"))
    assert len(overlays) == 1 and channels["B"].as_uri() in overlays[0].read_text()
    again = await engine.solve(spec)  # the same overlay folder: its repodata stays cached
    assert again == lock and len(list((tmp_path / "home" / "mamba-root" / "pins").iterdir())) == 1
