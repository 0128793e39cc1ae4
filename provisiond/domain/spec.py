"""Parse environment.yml into a frozen EnvSpec, and key it with spec_key.

The contract (§1.1-1.9) records what conda and micromamba accept; where they differ we follow
micromamba (optional ``dependencies``, ``sel(...)`` selectors). Every problem is a ``SpecError``
whose message starts with ``file:line:col: ``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import rattler
from rattler.exceptions import InvalidMatchSpecError, ParseSubdirError
from ruamel.yaml import YAML
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from provisiond.domain.channels import local_channel
from provisiond.domain.errors import PlatformError, SpecError
from provisiond.domain.shellvars import reason_refused
from provisiond.domain.text import check_conflict_markers, decode, line_col

__all__ = ["MAX_SPEC_BYTES", "MAX_SPEC_DEPTH", "MAX_SPEC_LINE", "EnvSpec", "load_spec", "parse_spec",
           "read_spec", "spec_key"]

# Real environment files are a few KiB and 3-4 levels deep. Parsing costs about 2 s per MiB, so
# the limits keep one file from holding a thread (or, for the sync callers, the loop) for long.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_DEPTH = 32
MAX_SPEC_LINE = 64 << 10  # ruamel scans a comment char by char into a str: one huge line costs seconds

log = logging.getLogger(__name__)

Pos = tuple[int, int]  # 0-based (line, column), as ruamel reports them

_KNOWN_KEYS = frozenset({"name", "channels", "dependencies", "variables", "prefix", "channel_priority", "platforms"})
_CHANNEL_PRIORITIES = ("strict", "flexible")
_SELECTOR = re.compile(r"sel\((unix|linux|osx|win)\)")  # micromamba: exact, no spaces (contract §1.7)
_COMMENT = re.compile(r"(?:^|\s+)#.*$")
_OPERATOR = re.compile(r"\s*(::|==|!=|>=|<=|~=|>|<|=|,|\|)\s*")
_SPACES = re.compile(r"\s+")
_PIP_PATH_OPTIONS = ("-e", "--editable", "-r", "--requirement", "-c", "--constraint")
_PIP_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip")
_YAML_HINT = "check the YAML syntax and indentation"
_PYTHON_TAG = re.compile(r"!!?python/[\w.:/-]*")
_PLATFORM_HEADER = re.compile(r"\A(?:[ \t]*(?:#[^\n]*)?\n)*?[ \t]*#\s*platform:\s*(\S+)", re.M)
_SPEC_HINT = "see https://docs.conda.io/projects/conda/en/latest/user-guide/concepts/pkg-specs.html"


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """A parsed, normalised environment.yml: what to solve, not how it was written."""

    name: str | None
    channels: tuple[str, ...]
    nodefaults: bool
    dependencies: tuple[str, ...]
    pip: tuple[str, ...]
    variables: tuple[tuple[str, str], ...]
    channel_priority: str = "strict"
    source: str | None = None
    project_dir: str | None = None
    warnings: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()  # conda-lock's key: what `provisionctl lock` locks for by default

    def to_wire(self) -> dict[str, Any]:
        """Return a JSON-able dict (``provisionctl check --json`` and the API)."""
        return {
            "name": self.name,
            "channels": list(self.channels),
            "nodefaults": self.nodefaults,
            "dependencies": list(self.dependencies),
            "pip": list(self.pip),
            "variables": dict(self.variables),
            "channel_priority": self.channel_priority,
            "source": self.source,
            "project_dir": self.project_dir,
            "warnings": list(self.warnings),
            **({"platforms": list(self.platforms)} if self.platforms else {}),
        }


@dataclass(slots=True)
class _Reader:
    """The file name, target platform and collected warnings of one parse."""

    source: str
    platform: str
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, pos: Pos, message: str, hint: str | None = None) -> SpecError:
        return SpecError(f"{self.source}:{pos[0] + 1}:{pos[1] + 1}: {message}", hint=hint)

    def warn(self, pos: Pos, message: str) -> None:
        self.warnings.append(f"{self.source}:{pos[0] + 1}:{pos[1] + 1}: {message}")


async def read_spec(path: str | os.PathLike[str]) -> EnvSpec:
    """``load_spec`` in a worker thread, so that the daemon's loop keeps answering while it parses."""
    return await asyncio.to_thread(load_spec, path)


def load_spec(path: str | os.PathLike[str]) -> EnvSpec:
    """Read and parse an environment file; its directory becomes ``project_dir``.

    A file over ``MAX_SPEC_BYTES`` is refused before it is read.
    """
    source = os.fspath(path)
    if "\0" in source:
        raise SpecError(f"{source!r}: not a file path")
    if os.path.exists(source) and not os.path.isdir(source) and not os.path.isfile(source):
        # A FIFO or a device would block the daemon's loop, or never end.
        raise SpecError(f"{source}: not a regular file", hint="point at an environment.yml")
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)  # + 1: a file that grew since a stat() is still caught
    except FileNotFoundError:
        raise SpecError(f"{source}: no such file", hint="check the path, or create an environment.yml") from None
    except IsADirectoryError:
        raise SpecError(f"{source}: is a directory", hint="name the environment.yml inside it") from None
    except OSError as exc:
        raise SpecError(f"{source}: cannot read: {exc.strerror or exc}", hint="check the file's permissions") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES >> 20} MiB; not an environment file (not parsed)",
                        hint="an environment.yml lists channels and dependencies; is this the right file?")
    for number, line in enumerate(data.splitlines()):
        if len(line) > MAX_SPEC_LINE:
            raise SpecError(f"{source}:{number + 1}:1: line longer than {MAX_SPEC_LINE >> 10} KiB; not an "
                            "environment file (not parsed)", hint="is this the right file?")
    log.debug("parsing %s (%d bytes)", source, len(data))
    text = decode(data, source)  # UTF-8, or UTF-16/32 with a BOM (PowerShell's `conda env export >`)
    return parse_spec(text, source=source, project_dir=os.path.dirname(os.path.abspath(source)))


def parse_spec(text: str, source: str = "environment.yml", project_dir: str | None = None, *,
               platform: str | None = None) -> EnvSpec:
    """Parse environment.yml text; ``sel(...)`` selectors are evaluated for ``platform`` (default: ours)."""
    reader = _Reader(source, platform or str(rattler.Subdir.current()), text.splitlines())
    check_conflict_markers(text, source)
    header = _PLATFORM_HEADER.match(text)  # a conda-lock rendered env file: `# platform: linux-64`
    if header is not None and header.group(1) not in (reader.platform, "noarch"):
        row = text.count("\n", 0, header.start(1))
        raise PlatformError(f"{source}:{row + 1}:1: rendered for {header.group(1)}, not {reader.platform}",
                            hint=f"render it for {reader.platform}: conda-lock render -p {reader.platform}")
    for match in _PYTHON_TAG.finditer(text):
        row, col = line_col(text, match.start())
        reader.warn((row, col), f"Python tag {match.group(0)} ignored: read as a plain YAML value")
    doc = _load_yaml(text, source)
    project_dir = os.path.abspath(project_dir) if project_dir is not None else None
    if doc is None:  # micromamba accepts a file without dependencies; conda does not
        reader.warn((0, 0), "file is empty")
        doc = {}
    if not isinstance(doc, dict):
        raise reader.error(_node_pos(doc), f"the top level must be a mapping (name:, dependencies:), not {_kind(doc)}")
    for key in doc:
        if key == "prefix":
            reader.warn(_pos(doc, "key", key), "prefix is ignored; provisiond manages prefixes")
        elif not isinstance(key, str) or key not in _KNOWN_KEYS:
            reader.warn(_pos(doc, "key", key), f"unknown key {str(key)!r} ignored")
    name = _name(reader, doc)
    channels, nodefaults = _channels(reader, doc, project_dir)
    dependencies, pip = _dependencies(reader, doc)
    variables, priority = _variables(reader, doc), _channel_priority(reader, doc)
    platforms = _platforms(reader, doc)
    return EnvSpec(name=name, channels=channels, nodefaults=nodefaults, dependencies=dependencies, pip=pip,
                   variables=variables, channel_priority=priority, source=source, project_dir=project_dir,
                   warnings=(*reader.warnings,), platforms=platforms)


def spec_key(spec: EnvSpec, platform: str, virtual_packages: Sequence[str] = (), *,
             channels: Sequence[str] | None = None, engine: str = "", pip: Sequence[str] = ()) -> str:
    """Return the sha256 hex of our own canonical request payload (it keys the solve cache).

    It holds everything that changes the answer: ``channels`` as the engine fetches them (base
    URLs expanded through ``channel_alias``, in priority order; ``spec.channels`` as written when
    not given) and the channel priority, the ``platform``, the ``virtual_packages``, the ``engine``
    (name and version) and, for a spec with a pip section, the ``pip`` resolver's settings.
    Name, variables, comments, formatting and dependency order do not change it; channel order
    does. Parse ``spec`` for the same ``platform``, so that its selectors agree with the key.
    """
    payload: dict[str, Any] = {
        "scheme": 2,
        "channels": list(spec.channels if channels is None else channels),
        "nodefaults": spec.nodefaults,
        "dependencies": sorted(set(spec.dependencies)),
        "pip": list(spec.pip),
        "channel_priority": spec.channel_priority,
        "platform": platform,
        "virtual_packages": sorted(set(virtual_packages)),
        "engine": engine,
        "pip_settings": list(pip) if spec.pip else [],
    }
    if any(_pip_uses_project_dir(line) for line in spec.pip):
        payload["project_dir"] = spec.project_dir  # relative pip paths resolve against the yml's dir (§1.6)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _load_yaml(text: str, source: str) -> Any:
    """Load one document with the round-trip loader, so that nodes carry ``.lc`` positions."""
    yaml = YAML(typ="rt")
    yaml.max_depth = MAX_SPEC_DEPTH
    try:
        return yaml.load(text)
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        line, col = (mark.line, mark.column) if mark is not None else (0, 0)
        raise SpecError(f"{source}:{line + 1}:{col + 1}: nested deeper than {MAX_SPEC_DEPTH} levels",
                        hint="an environment.yml is a few levels deep; is this the right file?") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line, mark.column) if mark is not None else (0, 0)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            problem += f" ({exc.context} at {exc.context_mark.line + 1}:{exc.context_mark.column + 1})"
        hint = ("YAML indentation must use spaces, not tabs" if "'\\t'" in problem
                else "remove or rename one of the duplicate keys" if "duplicate key" in problem else _YAML_HINT)
        raise SpecError(f"{source}:{line + 1}:{col + 1}: {problem}", hint=hint) from None
    except ReaderError as exc:
        line, col = line_col(text, exc.position)
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        message = f"unacceptable character {char}: {exc.reason}"
        raise SpecError(f"{source}:{line + 1}:{col + 1}: {message}", hint="is this a text file?") from None
    except RecursionError:
        raise SpecError(f"{source}:1:1: YAML nested too deeply", hint=_YAML_HINT) from None
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"{source}:1:1: invalid YAML: {reason}", hint=_YAML_HINT) from None


def _name(reader: _Reader, doc: dict[Any, Any]) -> str | None:
    value = doc.get("name")
    if value is None:
        return None
    _expect(reader, doc, "name", str, "a string", hint='quote it: name: "my-env"')
    if not value.strip() or "/" in value or "\\" in value:  # micromamba: file_spec_env_name_hook
        hint = "use a plain name without '/' or '\\'"
        raise reader.error(_pos(doc, "value", "name"), f"invalid environment name {str(value)!r}", hint=hint)
    name: str = value  # _expect checked it
    return name.strip()


def _channels(reader: _Reader, doc: dict[Any, Any], project_dir: str | None) -> tuple[tuple[str, ...], bool]:
    node = doc.get("channels")
    if node is None:
        return (), False
    _expect(reader, doc, "channels", list, "a list", hint="write: channels: [conda-forge]")
    channels: list[str] = []
    nodefaults = False
    for i, item in enumerate(node):
        if not isinstance(item, str) or not item.strip():
            raise reader.error(_pos(node, "item", i), f"a channel must be a non-empty string, not {_kind(item)}")
        channel = os.path.expandvars(item.strip())  # as conda and micromamba do (§1.1)
        channel = local_channel(channel.rstrip("/") or channel, project_dir)
        if channel == "nodefaults":
            nodefaults = True
        elif channel not in channels:
            channels.append(channel)
    return tuple(channels), nodefaults


def _dependencies(reader: _Reader, doc: dict[Any, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    node = doc.get("dependencies")
    if node is None:
        return (), ()
    _expect(reader, doc, "dependencies", list, "a list", hint="write each dependency as a list item: '- python=3.12'")
    deps: list[str] = []
    pip: list[str] = []
    pip_pos: Pos | None = None
    for i, item in enumerate(node):
        if not isinstance(item, dict):
            deps.append(_matchspec(reader, item, _pos(node, "item", i)))
            continue
        for key, value in item.items():
            if key == "pip":
                pip.extend(_pip(reader, item, value))
                pip_pos = pip_pos or _pos(item, "key", key)
            elif isinstance(key, str) and key.startswith("sel("):
                deps.extend(_selected(reader, item, key, value))
            else:
                message = f"dependency key {str(key)!r} ignored (did you mean '- {key}=...'?)"
                reader.warn(_pos(item, "key", key), message)
    if pip_pos is not None and "pip" not in {_spec_name(d) for d in deps}:
        reader.warn(pip_pos, "pip: section but no 'pip' dependency; conda and micromamba add pip, provisiond does not")
    return tuple(deps), tuple(pip)


def _pip(reader: _Reader, parent: dict[Any, Any], value: Any) -> list[str]:
    if value is None:
        return []
    _expect(reader, parent, "pip", list, "a list of requirements")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            message = f"a pip requirement must be a non-empty string, not {_kind(item)}"
            raise reader.error(_pos(value, "item", i), message)
    return [item.strip() for item in value]


def _selected(reader: _Reader, parent: dict[Any, Any], key: str, value: Any) -> list[str]:
    """Evaluate ``- sel(linux): spec`` for the target platform (micromamba only; conda ignores it)."""
    match = _SELECTOR.fullmatch(key)
    if match is None:
        hint = "use sel(unix), sel(linux), sel(osx) or sel(win), without spaces"
        raise reader.error(_pos(parent, "key", key), f"invalid selector {key!r}", hint=hint)
    spec = _matchspec(reader, value, _pos(parent, "value", key))  # checked even where it does not apply
    try:
        platform = rattler.Subdir(reader.platform)
    except ParseSubdirError as exc:
        message = f"cannot evaluate {key} for platform {reader.platform!r}: {exc}"
        raise reader.error(_pos(parent, "key", key), message) from None
    wanted = {"unix": platform.is_unix, "linux": platform.is_linux, "osx": platform.is_osx, "win": platform.is_windows}
    return [spec] if wanted[match.group(1)] else []


def _matchspec(reader: _Reader, value: Any, pos: Pos) -> str:
    """Normalise one dependency and check that rattler parses it as a MatchSpec."""
    if not isinstance(value, str):
        hint = "write dependencies as strings, e.g. '- python=3.12'"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            hint = f"YAML read {value} as a number; write the package name too, e.g. '- python={value}'"
        raise reader.error(pos, f"a dependency must be a string, not {_kind(value)}", hint=hint)
    spec = _normalise(value)
    if not spec:
        raise reader.error(pos, f"empty dependency {str(value)!r}")
    try:
        rattler.MatchSpec(spec, strict=False)
    except InvalidMatchSpecError as exc:
        hint = _SPEC_HINT
        if "{{" in spec or "{%" in spec:
            hint = "this looks like an unrendered template placeholder"
        elif re.search(r"\[[^=\]]*\]", spec):
            hint = "extras like 'pkg[all]' are pip syntax: list it under '- pip:'"
        reason = (str(exc).splitlines() or ["invalid"])[0]
        raise reader.error(pos, f"invalid dependency {value.strip()!r}: {reason}", hint=hint) from None
    return spec


def _normalise(text: str) -> str:
    """Drop a ``# comment`` and the spaces around operators: ``'numpy >= 1.2  # x'`` -> ``'numpy>=1.2'``."""
    text = _COMMENT.sub("", text).strip()
    head, bracket, tail = text.partition("[")  # bracket values (`[version='>= 1']`) stay as written
    return _OPERATOR.sub(r"\1", _SPACES.sub(" ", head)) + bracket + tail


def _spec_name(spec: str) -> str | None:
    try:
        return str(rattler.MatchSpec(spec, strict=False).name.normalized)
    except InvalidMatchSpecError:
        return None


def _variables(reader: _Reader, doc: dict[Any, Any]) -> tuple[tuple[str, str], ...]:
    node = doc.get("variables")
    if node is None:
        return ()
    _expect(reader, doc, "variables", dict, "a mapping", hint='write: variables: {MY_VAR: "value"}')
    variables: list[tuple[str, str]] = []
    for key, value in node.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise reader.error(_pos(node, "key", key), f"invalid variable name {str(key)!r}")
        # conda reserves PATH; we also refuse what runs code in the shell (shellvars.py, issue #9).
        refused = reason_refused(key)
        if refused is not None:
            reader.warn(_pos(node, "key", key), f"variable {key!r} ignored: {refused}")
            continue
        if value is None or isinstance(value, (dict, list)):
            message = f"variable {key!r} must have a scalar value, not {_kind(value)}"
            pos = _pos(node, "key" if value is None else "value", key)
            raise reader.error(pos, message, hint=f'for an empty value write {key}: ""')
        variables.append((str(key), value if isinstance(value, str) else _as_spelled(reader, node, key, value)))
    return tuple(variables)


def _as_spelled(reader: _Reader, node: Any, key: str, value: Any) -> str:
    """A plain scalar as the file spells it (``11.10``, ``False``, ``010``), as conda keeps it."""
    row, col = _pos(node, "value", key)
    if 0 <= row < len(reader.lines):
        raw = _COMMENT.sub("", reader.lines[row][col:]).strip()
        if raw and raw[0] not in "[{&*!|>'\"":
            return raw
    return str(value)
def _platforms(reader: _Reader, doc: dict[Any, Any]) -> tuple[str, ...]:
    """conda-lock's ``platforms: [linux-64, osx-arm64]``: each a platform rattler knows."""
    node = doc.get("platforms")
    if node is None:
        return ()
    _expect(reader, doc, "platforms", list, "a list", hint="write: platforms: [linux-64, osx-arm64]")
    found: list[str] = []
    for i, item in enumerate(node):
        try:
            platform = str(rattler.Subdir(str(item).strip()))
        except ParseSubdirError:
            raise reader.error(_pos(node, "item", i), f"unknown platform {str(item)!r}",
                               hint="e.g. linux-64, linux-aarch64, osx-64, osx-arm64, win-64") from None
        if platform not in found:
            found.append(platform)
    return tuple(found)


def _channel_priority(reader: _Reader, doc: dict[Any, Any]) -> str:
    value = doc.get("channel_priority", "strict")
    if not isinstance(value, str) or value not in _CHANNEL_PRIORITIES:
        message = f"'channel_priority' must be 'strict' or 'flexible', not {_kind(value)}"
        raise reader.error(_pos(doc, "value", "channel_priority"), message)
    return str(value)


def _pip_uses_project_dir(line: str) -> bool:
    """True if a pip line names a local path (``-e .``, ``-r x.txt``, ``./pkg``), relative to the yml."""
    tokens = line.split()
    first = tokens[0] if tokens else ""
    for option in _PIP_PATH_OPTIONS:
        if first == option or first.startswith(option + "=") or (len(option) == 2 and first.startswith(option)):
            return True
    if first in ("-f", "--find-links") or first.startswith("--find-links="):
        return any(_is_relative_path(t) for t in (first.partition("=")[2], *tokens[1:]) if t)
    return _is_relative_path(first)


def _is_relative_path(token: str) -> bool:
    if not token or "://" in token or token.startswith(("/", "~", "$")):
        return False
    return token in (".", "..") or token.startswith(("./", "../")) or "/" in token or token.endswith(_PIP_ARCHIVES)


def _kind(value: Any) -> str:
    """Describe a YAML value for a message: ``a number (3.9)``, ``a mapping``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "a boolean (true)", False: "a boolean (false)"}[value]
    if isinstance(value, (str, int, float)):
        return f"a string ({str(value)!r})" if isinstance(value, str) else f"a number ({value})"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"a {type(value).__name__}"


def _expect(reader: _Reader, parent: dict[Any, Any], key: str, kind: type, what: str, hint: str | None = None) -> None:
    """Raise a SpecError at ``parent[key]`` unless it is an instance of ``kind``."""
    value = parent.get(key)
    if not isinstance(value, kind):
        raise reader.error(_pos(parent, "value", key), f"{key!r} must be {what}, not {_kind(value)}", hint=hint)


def _node_pos(node: Any) -> Pos:
    lc = getattr(node, "lc", None)
    return (lc.line, lc.col or 0) if lc is not None and lc.line is not None else (0, 0)


def _pos(node: Any, kind: str, key: Any) -> Pos:
    """Position of ``node.lc.key(k)``, ``.value(k)`` or ``.item(i)``; else that of the node itself."""
    try:
        line, col = getattr(node.lc, kind)(key)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):  # merged (`<<:`) keys have none
        return _node_pos(node)
    return (line, col)
