"""environment.yml exports in the layout `conda env export` writes: a diff against conda shows only real differences."""

from __future__ import annotations

import difflib

from ruamel.yaml import YAML

from provisiond.domain.exports import export
from provisiond.domain.lock import Lock, Package, PipPackage
from tests.conftest import SHARED, needs_shared

FORGE = "https://conda.anaconda.org/conda-forge/"
# A real `conda env export` (conda 23, linux-64), from a public repository (../shared/data/envyml).
RECORDED = SHARED / "data" / "envyml" / "OpenCLIM__ecocrop__environment.yml"


def lock_of(pins: list[str], pip: tuple[PipPackage, ...] = ()) -> Lock:
    packages = []
    for pin in pins:
        name, version, build = pin.split("=")
        fn = f"{name}-{version}-{build}.conda"
        packages.append(Package(name=name, version=version, build=build, build_number=0, subdir="linux-64",
                                channel=FORGE, url=f"{FORGE}linux-64/{fn}", file_name=fn, sha256="0" * 64))
    return Lock(platform="linux-64", packages=tuple(sorted(packages)), channels=(FORGE,), pip=pip)


def test_layout_is_condas() -> None:
    """conda's serializer (ruamel, mapping 2, sequence 4, offset 2): what `conda env export` prints
    for this env, but `nodefaults` instead of `defaults` and no `prefix:`."""
    pip = (PipPackage(name="requests", version="2.31.0", url="https://files.example/requests.whl",
                      sha256="1" * 64),)
    text = export(lock_of(["python=3.11.5=hab00c5b_0", "_libgcc_mutex=0.1=conda_forge"], pip), name="demo")
    assert text == (
        "name: demo\n"
        "channels:\n"
        "  - conda-forge\n"
        "  - nodefaults\n"
        "dependencies:\n"
        "  - _libgcc_mutex=0.1=conda_forge\n"
        "  - python=3.11.5=hab00c5b_0\n"
        "  - pip:\n"
        "      - requests==2.31.0\n"
    )
    assert '"' not in text  # no JSON-quoted scalars
    assert YAML(typ="safe").load(text)["dependencies"][-1] == {"pip": ["requests==2.31.0"]}


def test_scalars_are_quoted_only_where_yaml_needs_it() -> None:
    from provisiond.domain.spec import parse_spec

    spec = parse_spec("name: 'on'\nchannels: [conda-forge]\ndependencies:\n  - 'python 3.11.*'\n  - numpy >=1.2\n"
                      "variables:\n  PORT: '8080'\n  FLAG: 'yes'\n", source="e.yml")
    text = export(lock_of([]), name="on", from_history=True, spec=spec)
    doc = YAML(typ="safe").load(text)
    assert doc == {"name": "on", "channels": ["conda-forge"], "dependencies": ["python 3.11.*", "numpy>=1.2"],
                   "variables": {"PORT": "8080", "FLAG": "yes"}}
    assert "\n  - numpy>=1.2\n" in text


@needs_shared
def test_diff_against_a_recorded_conda_export_shows_only_real_differences() -> None:
    recorded = RECORDED.read_text()
    pins = [line[4:] for line in recorded.splitlines() if line.startswith("  - ") and line.count("=") == 2]
    assert len(pins) > 200
    ours = export(lock_of(pins), name="ecocroptest")
    diff = [line for line in difflib.unified_diff(recorded.splitlines(), ours.splitlines(), lineterm="", n=0)
            if not line.startswith(("---", "+++", "@@"))]
    # conda's `defaults` is its default channel set: ours pins the channels that were used, and
    # never writes the machine's prefix.
    assert diff == ["-  - defaults", "+  - nodefaults", "-prefix: /home/users/mattjbr/miniconda3/envs/ecocroptest"]
