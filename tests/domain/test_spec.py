"""Tests for provisiond.domain.spec: environment.yml parsing, normalisation and spec_key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from provisiond.domain.errors import SpecError
from provisiond.domain.spec import (
    MAX_SPEC_BYTES,
    MAX_SPEC_DEPTH,
    MAX_SPEC_LINE,
    EnvSpec,
    load_spec,
    parse_spec,
    read_spec,
    spec_key,
)
from tests.conftest import SHARED, needs_shared

# /work/shared sits beside the repo checkout, in dev and in CI.
SAMPLES = SHARED / "contract" / "samples" / "micromamba" / "env-yaml"
ENVYML = SHARED / "data" / "envyml"
REAL_FILES = sorted(p for d in (SAMPLES, ENVYML) if d.is_dir() for p in d.iterdir() if p.suffix in (".yml", ".yaml"))
POSITION = re.compile(r"^.+:\d+:\d+: ")

# The real files that must fail, and why (everything else in SAMPLES and ENVYML must parse).
INVALID = {
    # pip-style extras in a conda dependency
    "BCDA-APS__bluesky_training__environment.yml": r":90:5: invalid dependency 'tiled\[all\]': invalid bracket$",
    # an unrendered jinja template
    "pydata__xarray__doc__environment_template.yml": r":7:5: invalid dependency '\{\{ local-package \}\}': ",
}


def parse(text: str, **kw: object) -> EnvSpec:
    """Parse with a fixed platform, so that selectors do not depend on the test machine."""
    kw.setdefault("platform", "linux-64")
    return parse_spec(text, **kw)  # type: ignore[arg-type]


def error(text: str, **kw: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, **kw)
    assert POSITION.match(info.value.message), info.value.message
    return info.value


# --- the real files ---------------------------------------------------------------------------


@needs_shared
def test_real_files_are_there() -> None:
    assert len([p for p in REAL_FILES if p.parent == SAMPLES]) >= 10
    assert len([p for p in REAL_FILES if p.parent == ENVYML]) >= 50
    assert set(INVALID) <= {p.name for p in REAL_FILES}


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_file_parses_or_fails_with_position(path: Path) -> None:
    expected = INVALID.get(path.name)
    if expected is None:
        spec = load_spec(path)
        assert spec.source == str(path)
        assert spec.project_dir == str(path.parent)
        assert all(POSITION.match(w) for w in spec.warnings), spec.warnings
        json.dumps(spec.to_wire())
        return
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert POSITION.match(info.value.message)
    assert info.value.message.startswith(f"{path}:")
    assert re.search(expected, info.value.message), info.value.message


@needs_shared
def test_real_invalid_dependency_hints() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(ENVYML / "BCDA-APS__bluesky_training__environment.yml")
    assert "pip" in (info.value.hint or "")
    with pytest.raises(SpecError) as info:
        load_spec(ENVYML / "pydata__xarray__doc__environment_template.yml")
    assert "template" in (info.value.hint or "")


@needs_shared
def test_real_selectors_follow_the_platform() -> None:
    text = (SAMPLES / "env_2.yaml").read_text()
    assert parse(text, platform="linux-64").dependencies == ("test1-unix", "test1-linux", "test2-linux", "test4")
    assert parse(text, platform="osx-arm64").dependencies == ("test1-unix", "test1-osx", "test4")
    assert parse(text, platform="win-64").dependencies == ("test1-win", "test4")


@needs_shared
def test_real_extra_white_space() -> None:
    spec = load_spec(SAMPLES / "env-extra-white-space.yaml")
    assert spec.dependencies == ("python>3.11", "numpy<2.0", "scipy>=1.5.0,<2.0.0", "scikit-learn>1.0.0")


@needs_shared
def test_real_files_details() -> None:
    canu = load_spec(ENVYML / "nf-core__modules__modules__nf-core__canu__environment.yml")
    assert "bioconda::canu=2.3=h3fb4750_1" in canu.dependencies
    rocket = load_spec(ENVYML / "NASA-Openscapes__py-rocket__ci__environment.yml")
    assert rocket.warnings == () and rocket.platforms == ("linux-64", "osx-64")  # conda-lock's key, read by `lock`
    cdms = load_spec(ENVYML / "CDAT__cdms__docs__environment.yml")
    assert cdms.warnings == (f"{cdms.source}:20:1: prefix is ignored; provisiond manages prefixes",)
    crlf = load_spec(ENVYML / "01life__ViromeFlowX__environment.yml")  # CRLF line ends
    assert crlf.name == "viromeflowx"
    assert crlf.channels[:2] == ("bioconda", "conda-forge")
    pythia = load_spec(ENVYML / "2i2c-org__demo-Project-Pythia__binder__environment.yml")
    assert "git+https://github.com/vlouf/eth_radar.git" in pythia.pip
    yourmed = load_spec(ENVYML / "0010Grent__YourMed__environment.yml")
    assert yourmed.pip == ("-r requirements.txt",)


# --- channels, dependencies, pip, variables ---------------------------------------------------


def test_channels_order_nodefaults_expandvars_dedup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIOND_TEST_CHANNEL", "https://example.org/private")
    spec = parse(
        "channels:\n"
        "  - pytorch\n"
        "  - nodefaults\n"
        "  - conda-forge\n"
        "  - ${PROVISIOND_TEST_CHANNEL}/main/\n"
        "  - pytorch\n"
        "  - ' bioconda '\n"
    )
    assert spec.channels == ("pytorch", "conda-forge", "https://example.org/private/main", "bioconda")
    assert spec.nodefaults is True
    assert parse("channels: [conda-forge, defaults]").nodefaults is False
    assert parse("channels: [conda-forge, defaults]").channels == ("conda-forge", "defaults")


def test_channel_qualified_and_build_strings_are_kept() -> None:
    spec = parse(
        "dependencies:\n"
        "  - conda-forge::numpy\n"
        "  - conda-forge/label/testing::matplotlib-base>=3.6\n"
        "  - numpy=1.21.0=py39h6a678d6_0\n"
        "  - bioconda::canu=2.3=h3fb4750_1\n"
        "  - numpy 1.21.0 py39_0\n"
        "  - \"numpy[version='>=1.2',build='py39*']\"\n"
    )
    assert spec.dependencies == (
        "conda-forge::numpy",
        "conda-forge/label/testing::matplotlib-base>=3.6",
        "numpy=1.21.0=py39h6a678d6_0",
        "bioconda::canu=2.3=h3fb4750_1",
        "numpy 1.21.0 py39_0",
        "numpy[version='>=1.2',build='py39*']",
    )


def test_spaces_and_comments_are_normalised() -> None:
    spec = parse(
        "dependencies:\n"
        "  - numpy >= 1.2\n"
        "  - ' scipy   >=    1.5.0,  < 2.0.0 '\n"
        "  - python =3.11  # a YAML comment, dropped by ruamel\n"
        "  - 'pandas != 2.0 # a comment inside a quoted string'\n"
        "  - zarr <3.0 | >=3.0.10\n"
        "  - 'conda-forge :: xarray'\n"
        "  - numpy   1.21.0   py39_0\n"
    )
    assert spec.dependencies == (
        "numpy>=1.2",
        "scipy>=1.5.0,<2.0.0",
        "python=3.11",
        "pandas!=2.0",
        "zarr<3.0|>=3.0.10",
        "conda-forge::xarray",
        "numpy 1.21.0 py39_0",
    )


def test_pip_section_is_kept_verbatim() -> None:
    spec = parse(
        "dependencies:\n"
        "  - python=3.12\n"
        "  - conda-forge::pip=24\n"
        "  - pip:\n"
        "      - requests[socks] >= 2.0 ; python_version >= '3.8'\n"
        "      - '  -e .  '\n"
        "      - --extra-index-url https://example.org/simple\n"
        "  - pip: [rich]\n"
    )
    assert spec.dependencies == ("python=3.12", "conda-forge::pip=24")
    assert spec.pip == (
        "requests[socks] >= 2.0 ; python_version >= '3.8'",
        "-e .",
        "--extra-index-url https://example.org/simple",
        "rich",
    )
    assert spec.warnings == ()


def test_pip_section_without_pip_dependency_warns() -> None:
    spec = parse("dependencies:\n  - python\n  - pip:\n      - rich\n")
    assert spec.dependencies == ("python",)  # nothing added
    assert spec.warnings == (
        "environment.yml:3:5: pip: section but no 'pip' dependency; conda and micromamba add pip, provisiond does not",
    )


def test_variables_keep_case_and_order() -> None:
    spec = parse(
        "variables:\n"
        "  my_var: hello\n"
        "  COUNT: 3\n"
        "  RATIO: 0.5\n"
        "  DEBUG: true\n"
        "  PATH: /nope\n"
        "  EMPTY: ''\n"
    )
    assert spec.variables == (("my_var", "hello"), ("COUNT", "3"), ("RATIO", "0.5"), ("DEBUG", "true"), ("EMPTY", ""))
    assert spec.warnings == (
        "environment.yml:6:3: variable 'PATH' ignored: it controls the shell or the loader, so activation never sets it",
    )
    assert error("variables:\n  A:\n").message == (
        "environment.yml:2:3: variable 'A' must have a scalar value, not null"
    )
    assert error("variables: [A]").message == "environment.yml:1:12: 'variables' must be a mapping, not a list"


@pytest.mark.parametrize("name", ["PROMPT_COMMAND", "PS0", "PS4", "BASH_ENV", "ENV", "ZDOTDIR", "IFS", "LD_PRELOAD",
                                  "LD_AUDIT", "LD_LIBRARY_PATH", "fish_function_path", "fish_user_paths", "HOME",
                                  "BASH_FUNC_ls%%", "HISTFILE", "PROMPT", "CONDA_PREFIX", "1ABC", "MY-VAR", "A B"])
def test_shell_control_variables_and_bad_names_are_reported_and_dropped(name: str) -> None:
    spec = parse(f"name: x\nvariables:\n  OK: fine\n  {json.dumps(name)}: 'id > /tmp/PWNED'\n")
    assert spec.variables == (("OK", "fine"),)
    assert len(spec.warnings) == 1 and spec.warnings[0].startswith(f"environment.yml:4:3: variable {name!r} ignored: ")


def test_name_and_channel_priority() -> None:
    spec = parse("name: test env with spaces\nchannel_priority: flexible\n")
    assert (spec.name, spec.channel_priority) == ("test env with spaces", "flexible")
    assert parse("dependencies: []").channel_priority == "strict"
    assert error("name: envs/ml").message == "environment.yml:1:7: invalid environment name 'envs/ml'"
    assert error("name: 12").message == "environment.yml:1:7: 'name' must be a string, not a number (12)"
    assert error("channel_priority: disabled").message.startswith(
        "environment.yml:1:19: 'channel_priority' must be 'strict' or 'flexible'"
    )


def test_unknown_keys_and_prefix_warn_with_position() -> None:
    spec = parse("name: x\nprefix: /opt/env\nplatforms:\n  - linux-64\ncategory: main\n")
    assert spec.warnings == (
        "environment.yml:2:1: prefix is ignored; provisiond manages prefixes",
        "environment.yml:5:1: unknown key 'category' ignored",
    )
    assert spec.platforms == ("linux-64",)


def test_platforms_key_is_read_as_conda_lock_does() -> None:
    spec = parse("platforms: [osx-arm64, linux-64, osx-arm64]\ndependencies: [python]\n")
    assert spec.platforms == ("osx-arm64", "linux-64")
    with pytest.raises(SpecError, match=r"environment.yml:1:23: unknown platform 'mars-64'"):
        parse("platforms: [linux-64, mars-64]\n")
    with pytest.raises(SpecError, match="'platforms' must be a list"):
        parse("platforms: linux-64\n")


def test_empty_file_is_an_empty_env_with_a_warning() -> None:
    for text in ("", "\n\n", "# only a comment\n", "---\n"):
        spec = parse(text, source="envs/empty.yml")
        assert (spec.dependencies, spec.channels, spec.pip) == ((), (), ())
        assert spec.warnings == ("envs/empty.yml:1:1: file is empty",)
    assert parse("name: x\ndependencies:\n").dependencies == ()


# --- errors with positions ---------------------------------------------------------------------


def test_broken_yaml_gives_exact_position() -> None:
    tab = error("name: x\ndependencies:\n\t- numpy\n")
    assert tab.message == "environment.yml:3:1: found character '\\t' that cannot start any token"
    assert "tabs" in (tab.hint or "")
    flow = error("name: x\nchannels: [conda-forge\ndependencies: []\n")
    assert flow.message.startswith("environment.yml:3:13: expected ',' or ']', but got ':'")
    dup = error("name: a\nchannels: []\nname: b\n", source="envs/dup.yml")
    assert dup.message.startswith('envs/dup.yml:3:1: found duplicate key "name"')
    quote = error("name: 'unterminated\n")
    assert quote.message.startswith("environment.yml:2:1: found unexpected end of stream")


def test_bad_matchspec_gives_its_own_position() -> None:
    err = error("name: x\ndependencies:\n  - numpy\n  - python >=3.9\n    # comment\n  - 'numpy >='\n")
    assert err.message == "environment.yml:6:5: invalid dependency 'numpy >=': unable to parse version spec: >="
    flow = error("dependencies: [numpy, ' b@d']")
    assert flow.message.startswith("environment.yml:1:23: invalid dependency 'b@d': invalid package name")
    assert error("dependencies:\n  - ''").message == "environment.yml:2:5: empty dependency ''"


def test_numbers_and_other_types_as_dependencies() -> None:
    err = error("dependencies:\n  - numpy\n  - 3.9\n")
    assert err.message == "environment.yml:3:5: a dependency must be a string, not a number (3.9)"
    assert "python=3.9" in (err.hint or "")
    assert error("dependencies:\n  -\n").message == "environment.yml:2:4: a dependency must be a string, not null"
    nested = error("dependencies:\n  - [a, b]\n")
    assert nested.message == "environment.yml:2:5: a dependency must be a string, not a list"
    assert error("dependencies: numpy").message.startswith("environment.yml:1:15: 'dependencies' must be a list")
    assert error("dependencies:\n  python: 3.9\n").message == (
        "environment.yml:2:3: 'dependencies' must be a list, not a mapping"
    )
    assert error("dependencies:\n  - pip: rich\n").message.startswith("environment.yml:2:10: 'pip' must be a list")
    assert error("dependencies:\n  - pip: [rich, 2]\n").message.startswith("environment.yml:2:17: a pip requirement")


def test_other_dependency_mapping_keys_warn() -> None:
    spec = parse("dependencies:\n  - numpy\n  - python: 3.9\n")
    assert spec.dependencies == ("numpy",)
    assert spec.warnings == ("environment.yml:3:5: dependency key 'python' ignored (did you mean '- python=...'?)",)


def test_channels_type_errors() -> None:
    assert error("channels: conda-forge").message == (
        "environment.yml:1:11: 'channels' must be a list, not a string ('conda-forge')"
    )
    assert error("channels:\n  - conda-forge\n  - 42\n").message == (
        "environment.yml:3:5: a channel must be a non-empty string, not a number (42)"
    )


def test_selectors() -> None:
    text = "dependencies:\n  - sel(unix): bash\n  - sel(win): m2-bash\n  - sel(osx): clang\n"
    assert parse(text, platform="linux-aarch64").dependencies == ("bash",)
    assert parse(text, platform="osx-64").dependencies == ("bash", "clang")
    assert parse(text, platform="win-64").dependencies == ("m2-bash",)
    bad = error("dependencies:\n  - sel(linux ): x\n")
    assert bad.message == "environment.yml:2:5: invalid selector 'sel(linux )'"
    assert error("dependencies:\n  - sel(linux64): x\n").message.startswith("environment.yml:2:5: invalid selector")
    # a bad spec under a selector for another platform is still an error, at the spec's position
    assert error("dependencies:\n  - sel(win): 'b@d'\n").message.startswith(
        "environment.yml:2:15: invalid dependency 'b@d'"
    )
    assert error("dependencies:\n  - sel(linux): [a, b]\n").message.startswith("environment.yml:2:17: a dependency")
    assert error("dependencies:\n  - sel(linux): x\n", platform="nonsense").message.startswith(
        "environment.yml:2:5: cannot evaluate sel(linux) for platform 'nonsense'"
    )


def test_top_level_must_be_a_mapping() -> None:
    assert error("- numpy\n- scipy\n").message.startswith("environment.yml:1:1: the top level must be a mapping")
    assert error("just a string").message.endswith("not a string ('just a string')")


@pytest.mark.parametrize(
    "text",
    [
        "\t",
        "a:\n\tb: 1\n",
        "\x00\x01\x02binary\xff\xfe",
        "dependencies:\n  - numpy\n\x07",
        "{",
        "}",
        "[",
        "]:",
        "'",
        '"',
        "- a\n- b",
        "&a [*a]",
        "*undefined",
        "a: *undefined",
        "dependencies: {{",
        "---\n---\n",
        "a: 1\n---\nb: 2\n",
        "a: !!float abc",
        "a: !!int xyz",
        "a: !!timestamp foo",
        "[" * 600,  # deeper flow nesting is slow in ruamel (~3 s at 1500), still a SpecError
        "{a: " * 3000,
        "%YAML 9.9\n---\na: 1",
        "%TAG",
        "\ud800",
        "name: !!binary aGk=",
        "dependencies: &d\n  - *d\n",
        "dependencies:\n  - !!set {a}",
        "dependencies:\n  - {pip: {a: b}}",
        "channels: [[a]]",
        "variables: {1: a}",
        "variables: {A: [1]}",
        "dependencies: [pip: 3]",
        "<<: {dependencies: 3}",
        "name: x\n<<: {channels: [1]}\n",
    ],
)
def test_garbage_only_raises_spec_error(text: str) -> None:
    error(text)


@pytest.mark.parametrize("text", [":::", "? [a, b]\n: c", "1: 2", "~: ~", "dependencies: ~", "<<: {name: x}"])
def test_odd_but_valid_yaml_parses(text: str) -> None:
    assert all(POSITION.match(w) for w in parse(text).warnings)


def test_random_garbage_only_raises_spec_error() -> None:
    rng = random.Random(20240611)
    alphabet = list("ab01-:_ \n\t{}[],'\"&*!|>#%@`?=<~.\\/") + ["dependencies:", "- ", "pip:", "sel(", "\x00", "é"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        try:
            spec = parse(text)
        except SpecError as exc:
            assert POSITION.match(exc.message), (text, exc.message)
        else:
            assert isinstance(spec, EnvSpec)


# --- load_spec -------------------------------------------------------------------------------------


def test_load_spec_sets_source_and_project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "environment.yml").write_text("name: x\ndependencies: [numpy]\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(Path("proj/environment.yml"))
    assert spec.source == "proj/environment.yml"
    assert spec.project_dir == str(tmp_path / "proj")
    assert spec.dependencies == ("numpy",)


def test_load_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^.*/missing\.yml: no such file$") as info:
        load_spec(tmp_path / "missing.yml")
    assert info.value.hint
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
    bad = tmp_path / "latin1.yml"
    bad.write_bytes(b"name: x\ndependencies:\n  - caf\xe9\n")
    with pytest.raises(SpecError, match=r"latin1\.yml:3:8: not UTF-8 text$"):
        load_spec(bad)


def test_load_spec_refuses_a_file_over_the_size_limit_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "environment.yml"
    big.write_text("dependencies:\n" + "  - numpy\n" * (MAX_SPEC_BYTES // 10 + 1))
    with pytest.raises(SpecError, match=r"environment\.yml: larger than 1 MiB; not an environment file \(not parsed\)$"):
        load_spec(big)
    at_limit = tmp_path / "at-limit.yml"
    lines = ("#" * (MAX_SPEC_LINE - 1) + "\n") * (MAX_SPEC_BYTES // MAX_SPEC_LINE - 1)
    at_limit.write_text("dependencies: [numpy]\n" + lines + "#" * (MAX_SPEC_BYTES - 23 - len(lines)) + "\n")
    assert at_limit.stat().st_size == MAX_SPEC_BYTES
    assert load_spec(at_limit).dependencies == ("numpy",)


def test_load_spec_refuses_a_line_over_the_limit_before_parsing(tmp_path: Path) -> None:
    """One 1 MiB comment line took ruamel 16 s (it grows the comment one character at a time)."""
    long = tmp_path / "environment.yml"
    long.write_text("dependencies: [numpy]\n#" + "x" * MAX_SPEC_LINE + "\n")
    with pytest.raises(SpecError, match=r"environment\.yml:2:1: line longer than 64 KiB; not an environment file"):
        load_spec(long)


@pytest.mark.parametrize("text, position", [
    ("dependencies: " + "[" * 40 + "]" * 40 + "\n", ":1:" + str(14 + MAX_SPEC_DEPTH)),  # flow style: the 33rd level
    ("dependencies:\n" + "".join("  " * i + "- \n" for i in range(1, 40)), f":{MAX_SPEC_DEPTH + 1}:"),  # block style
    ("a: " + "[" * 1000 + "]" * 1000 + "\n", ":1:"),  # used to end in RecursionError
])
def test_nesting_deeper_than_the_limit_is_an_error_with_a_position(text: str, position: str) -> None:
    with pytest.raises(SpecError, match=rf"^deep\.yml{position}\d*: nested deeper than {MAX_SPEC_DEPTH} levels$"):
        parse_spec(text, source="deep.yml")
    parse_spec("x: " + "[" * (MAX_SPEC_DEPTH - 1) + "]" * (MAX_SPEC_DEPTH - 1) + "\n")  # at the limit: parses


async def test_read_spec_parses_in_a_worker_thread(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text("name: x\ndependencies: [numpy]\n")
    assert await read_spec(tmp_path / "environment.yml") == load_spec(tmp_path / "environment.yml")


# --- EnvSpec --------------------------------------------------------------------------------------


def test_envspec_is_frozen_and_wire_is_json() -> None:
    spec = parse(
        "name: demo\nchannels: [conda-forge, nodefaults]\n"
        "dependencies: [python=3.12, {pip: [rich]}, pip]\nvariables: {A: b}\n",
        source="demo.yml",
        project_dir="/srv/demo",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    assert json.loads(json.dumps(spec.to_wire())) == {
        "name": "demo",
        "channels": ["conda-forge"],
        "nodefaults": True,
        "dependencies": ["python=3.12", "pip"],
        "pip": ["rich"],
        "variables": {"A": "b"},
        "channel_priority": "strict",
        "source": "demo.yml",
        "project_dir": "/srv/demo",
        "warnings": [],
    }


def test_values_are_plain_str_not_ruamel_subclasses() -> None:
    spec = parse('name: "n"\nchannels: ["c"]\ndependencies: ["d", pip, {pip: ["p"]}]\nvariables: {"K": "v"}\n')
    values = [spec.name, *spec.channels, *spec.dependencies, *spec.pip, *(x for kv in spec.variables for x in kv)]
    assert values == ["n", "c", "d", "pip", "p", "K", "v"]
    assert all(type(v) is str for v in values)


# --- spec_key -------------------------------------------------------------------------------------

GOLDEN = """\
name: golden
channels:
  - conda-forge
  - bioconda
  - nodefaults
dependencies:
  - python >=3.11
  - numpy=1.26
  - bioconda::samtools=1.21
  - pip
  - pip:
      - requests==2.32.3
"""


def test_spec_key_golden() -> None:
    # Pinned: a change here invalidates every cached solve. Bump "scheme" on purpose, never by accident.
    # Scheme 2 added the engine, the pip settings and channels as expanded URLs (issue #10).
    spec = parse(GOLDEN)
    payload = (
        '{"channel_priority":"strict","channels":["conda-forge","bioconda"],'
        '"dependencies":["bioconda::samtools=1.21","numpy=1.26","pip","python>=3.11"],"engine":"","nodefaults":true,'
        '"pip":["requests==2.32.3"],"pip_settings":[],"platform":"linux-64","scheme":2,"virtual_packages":[]}'
    )
    assert spec_key(spec, "linux-64") == hashlib.sha256(payload.encode()).hexdigest()
    assert spec_key(spec, "linux-64") == "eeda3e246a83e69f009a891bbdd924d0ccae3515ea3d9572f1746850460c10af"
    virtual = ["__unix=0=0", "__glibc=2.17=0"]
    assert spec_key(spec, "linux-64", virtual) == "bb4b74265e39a9205f29adbccfef60eeb33874e9a2679224038940f066f2f9a9"
    # As the daemon calls it: channels expanded by the engine, its name and version, uv's settings.
    full = spec_key(spec, "linux-64", virtual,
                    channels=["https://conda.anaconda.org/conda-forge/", "https://conda.anaconda.org/bioconda/"],
                    engine="py-rattler 0.28.0", pip=["uv 0.5.0"])
    payload = (
        '{"channel_priority":"strict","channels":["https://conda.anaconda.org/conda-forge/",'
        '"https://conda.anaconda.org/bioconda/"],'
        '"dependencies":["bioconda::samtools=1.21","numpy=1.26","pip","python>=3.11"],'
        '"engine":"py-rattler 0.28.0","nodefaults":true,"pip":["requests==2.32.3"],"pip_settings":["uv 0.5.0"],'
        '"platform":"linux-64","scheme":2,"virtual_packages":["__glibc=2.17=0","__unix=0=0"]}'
    )
    assert full == hashlib.sha256(payload.encode()).hexdigest()
    assert full == "c6f5315d5bf2c595dbc0c684f4be2da09eb3e216f0b9afdd4412e06e9dbb4a02"


def test_spec_key_ignores_name_comments_order_and_variables() -> None:
    base = spec_key(parse(GOLDEN), "linux-64")
    same = """\
# a comment
name: other-name
variables: {A: b}
channels: [conda-forge, bioconda, nodefaults]   # flow style
dependencies:
  - pip:
    - requests==2.32.3
  - bioconda::samtools=1.21
  - pip
  - numpy=1.26   # pinned
  - python>=3.11
  - python >= 3.11
"""
    assert spec_key(parse(same), "linux-64") == base
    assert spec_key(parse(GOLDEN, source="x.yml", project_dir="/elsewhere"), "linux-64") == base
    assert spec_key(parse(GOLDEN), "linux-64", ["__a", "__b"]) == spec_key(parse(GOLDEN), "linux-64", ["__b", "__a"])


def test_spec_key_changes_with_what_matters() -> None:
    base = spec_key(parse(GOLDEN), "linux-64")
    swapped = GOLDEN.replace("  - conda-forge\n  - bioconda\n", "  - bioconda\n  - conda-forge\n")
    assert spec_key(parse(swapped), "linux-64") != base
    assert spec_key(parse(GOLDEN.replace("  - nodefaults\n", "")), "linux-64") != base
    assert spec_key(parse(GOLDEN.replace("numpy=1.26", "numpy=1.25")), "linux-64") != base
    assert spec_key(parse(GOLDEN.replace("requests==2.32.3", "requests==2.32.4")), "linux-64") != base
    assert spec_key(parse(GOLDEN + "channel_priority: flexible\n"), "linux-64") != base
    assert spec_key(parse(GOLDEN), "osx-arm64") != base
    assert spec_key(parse(GOLDEN), "linux-64", ["__glibc=2.17=0"]) != base
    assert spec_key(parse(GOLDEN), "linux-64", channels=["https://mirror.example/conda-forge/", "b"]) != base
    assert spec_key(parse(GOLDEN), "linux-64", engine="micromamba 2.8.1") != base
    assert spec_key(parse(GOLDEN), "linux-64", pip=["UV_INDEX_URL=https://pypi.example/simple"]) != base
    no_pip = parse(GOLDEN.replace("  - pip:\n      - requests==2.32.3\n", ""))
    assert spec_key(no_pip, "linux-64", pip=["uv 0.5.0"]) == spec_key(no_pip, "linux-64")  # only with a pip section


@pytest.mark.parametrize(
    ("line", "local"),
    [
        ("-e .", True),
        ("--editable=./pkg", True),
        ("-r requirements.txt", True),
        ("-rrequirements.txt", True),
        ("-c constraints.txt", True),
        ("./vendor/pkg", True),
        ("../sibling", True),
        ("dist/pkg-1.0-py3-none-any.whl", True),
        ("--find-links ./wheels", True),
        ("-e git+https://github.com/org/repo.git#egg=repo", True),  # pip clones into ./src
        ("requests==2.32.3", False),
        ("git+https://github.com/org/repo.git", False),
        ("pkg @ https://example.org/pkg-1.0.tar.gz", False),
        ("--extra-index-url https://example.org/simple", False),
        ("--find-links https://example.org/wheels", False),
        ("/abs/path/pkg", False),
    ],
)
def test_spec_key_depends_on_project_dir_only_for_local_pip_paths(line: str, local: bool) -> None:
    text = f"dependencies:\n  - pip\n  - pip:\n    - {line!r}\n"
    here = spec_key(parse(text, project_dir="/srv/a"), "linux-64")
    there = spec_key(parse(text, project_dir="/srv/b"), "linux-64")
    assert (here != there) is local
