"""Activation, computed once per env and per project, rendered for bash, zsh, fish, POSIX sh and JSON.

Two levels (docs/activation.md):

- **env**, in the shared store (``activation/<env_key>/``): what a prefix contributes, read once at
  publish time: variables from ``etc/conda/env_vars.d`` and ``conda-meta/state``, and the
  ``activate.d``/``deactivate.d`` scripts per shell. No secrets: a store may be copied into an image.
- **project**, per user (``<state>/projects/<project dir>/.provisiond/``): that env under the
  project's name, plus its ``variables:`` and ``.env`` values, in files of mode 0600 in 0700 dirs.
  The shell hook finds them by string concatenation and notices a rebuild by reading ``stamp``.

We render activation ourselves: ``rattler.shell.activate`` leaks the caller's PATH, ignores the
caller's environment and expands ``$`` (DESIGN.md, "Known pitfalls: Activation").
No aiohttp, ruamel or rattler here: provisionctl imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from provisiond.config import layout
from provisiond.config.locations import SPEC_FILES
from provisiond.config.settings import Paths
from provisiond.domain.shellvars import reason_refused
from provisiond.shell.dotenv import parse_dotenv
from provisiond.shell.model import SCHEME, Activation, EnvFacts
from provisiond.shell.render import activate_script, deactivate_script, source_lines
from provisiond.store.files import read_regular, write_atomic
from provisiond.store.names import name_activation_dir, target_of_name

__all__ = [
    "SHELLS", "Activation", "EnvFacts", "env_facts", "find_project_dir", "load_env_facts",
    "name_activation_dir", "name_variables", "project_activation_dir", "read_project_activation",
    "refresh_project_activation", "remove_name_activation", "remove_project_activation", "remove_project_notice",
    "render_activation",
    "render_deactivation", "target_of_name", "write_env_activation",
    "write_name_activation", "write_project_activation",
    "write_project_notice",
]

log = logging.getLogger(__name__)

SHELLS = ("bash", "zsh", "fish", "sh", "json")
UNSET_MARKER = "***unset***"  # conda's "remove this variable" value in conda-meta/state
ENV_FILE = "env.json"
# The per-project and per-name file names (layout.py owns them).
STAMP, NOTICE, PROJECT_LEAF = layout.STAMP, layout.NOTICE, layout.PROJECT_LEAF
NAMES_DIR, NAME_TARGET, NAME_PROJECT = layout.NAMES, layout.NAME_TARGET, layout.NAME_PROJECT
# A name's scripts in the store: sh and json for `run` and cold starts, the others for `activate NAME`.
NAME_SHELLS = ("sh", "json", "bash", "zsh", "fish")
CORE_VARS = ("CONDA_PREFIX", "CONDA_SHLVL", "CONDA_DEFAULT_ENV", "CONDA_PROMPT_MODIFIER")


# -- env level ---------------------------------------------------------------------------------

def env_facts(paths: Paths, env_key: str, prefix: str | os.PathLike[str]) -> EnvFacts:
    """Read what ``prefix`` contributes to activation, by conda's rules (contract §3.1)."""
    root = Path(prefix)
    warnings: list[str] = []
    merged: dict[str, str] = {}
    vars_dir = root / "etc" / "conda" / "env_vars.d"
    if vars_dir.is_dir():
        for file in sorted(p for p in vars_dir.iterdir() if p.is_file()):
            merged.update(_read_vars(file, None, warnings))
    merged.update(_read_vars(root / "conda-meta" / "state", "env_vars", warnings))
    # ***unset*** drops the variable (a state tombstone may hide a package's value); it is not exported.
    env_vars = _valid({k.upper(): v for k, v in merged.items() if v != UNSET_MARKER}, "env var", warnings)
    activate: dict[str, tuple[str, ...]] = {}
    deactivate: dict[str, tuple[str, ...]] = {}
    for kind, ext in (("sh", ".sh"), ("fish", ".fish")):
        activate[kind] = _scripts(root / "etc" / "conda" / "activate.d", ext, reverse=False)
        deactivate[kind] = _scripts(root / "etc" / "conda" / "deactivate.d", ext, reverse=True)
    return EnvFacts(env_key=env_key, prefix=str(root), activation_dir=str(paths.activation / env_key),
                    env_vars=env_vars, activate=activate, deactivate=deactivate, warnings=tuple(warnings))


def write_env_activation(paths: Paths, env_key: str, prefix: str | os.PathLike[str]) -> EnvFacts:
    """Compute an env's activation once, right after publishing it, into ``activation/<env_key>/``."""
    facts = env_facts(paths, env_key, prefix)
    directory = paths.activation / env_key
    directory.mkdir(parents=True, exist_ok=True)
    for kind in ("sh", "fish"):
        write_atomic(directory / f"deactivate.d.{kind}", source_lines(kind, facts.deactivate[kind]), 0o600)
    # Full scripts under the prefix's own name, for cold starts that know only the env (DESIGN.md).
    plain = Activation(name=Path(facts.prefix).name, facts=facts, generation=env_key[:16])
    for shell in SHELLS:
        write_atomic(directory / f"activate.{shell}", render_activation(plain, shell), 0o600)
    write_atomic(directory / ENV_FILE, _dumps(facts.to_wire()), 0o600)  # last: its presence means complete
    for warning in facts.warnings:
        log.warning("env %s: %s", env_key[:16], warning)
    return facts


def load_env_facts(paths: Paths, env_key: str, prefix: str | os.PathLike[str] | None = None) -> EnvFacts:
    """An env's facts from its ``env.json``; read from the prefix if that is missing (older stores)."""
    facts = _stored_facts(paths, env_key, prefix)
    return facts if facts is not None else env_facts(paths, env_key, prefix or paths.prefix(env_key))


# -- name level (store, no secrets) -----------------------------------------------------------

def write_name_activation(paths: Paths, name: str, env_key: str, prefix: str | os.PathLike[str],
                          variables: Sequence[tuple[str, str]] = (), *, prompt: bool = True,
                          project: str | None = None) -> bool:
    """Render ``name``'s env with its ``variables:`` for ``provisionctl run``, ``activate NAME`` and
    ``scripts/cold-start``; a project's name also records its directory (``activate NAME`` prints the
    project's activation, with its ``.env``, from the state dir).

    Never ``.env`` values: the store may be copied into an image. Returns whether anything changed.
    """
    directory = name_activation_dir(paths, name)
    if directory is None:
        log.warning("env %r: not a file name, so no activation in the store (cold-start cannot run it)", name)
        return False
    facts = _stored_facts(paths, env_key, prefix) or write_env_activation(paths, env_key, prefix)
    warnings: list[str] = []
    act = Activation(name=name, facts=facts, generation=env_key[:16],
                     variables=_valid({k.upper(): str(v) for k, v in variables}, "variable", warnings), prompt=prompt)
    for warning in warnings:
        log.warning("env %s: %s", name, warning)
    target = f"env_key={env_key}\nprefix={facts.prefix}\n"
    pointer = f"{project}\n" if project else None
    if _read_json(directory / "activate.json") == act.to_wire() and _read_text(directory / NAME_TARGET) == target \
            and _read_text(directory / NAME_PROJECT) == pointer \
            and all((directory / f"activate.{shell}").is_file() for shell in NAME_SHELLS):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    for shell in NAME_SHELLS:
        write_atomic(directory / f"activate.{shell}", render_activation(act, shell), 0o600)
    if pointer is not None:
        write_atomic(directory / NAME_PROJECT, pointer, 0o600)
    else:
        (directory / NAME_PROJECT).unlink(missing_ok=True)
    write_atomic(directory / NAME_TARGET, target, 0o600)  # last: cold-start reads it first
    return True


def remove_name_activation(paths: Paths, name: str) -> None:
    """Forget a name's activation in the store (the name was removed)."""
    directory = name_activation_dir(paths, name)
    if directory is None:
        return
    # The target first: cold-start and `activate NAME` stop at once.
    for file in (NAME_TARGET, NAME_PROJECT, *(f"activate.{shell}" for shell in NAME_SHELLS)):
        (directory / file).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


def name_variables(paths: Paths, name: str) -> tuple[tuple[str, str], ...]:
    """The ``variables:`` of a name's activation in the store (a clone takes its source's)."""
    directory = name_activation_dir(paths, name)
    data = _read_json(directory / "activate.json") if directory else None
    return tuple(data.get("variables", {}).items()) if isinstance(data, dict) else ()


# -- project level -----------------------------------------------------------------------------

def project_activation_dir(paths: Paths, project_dir: str | os.PathLike[str]) -> Path:
    """Where a project's activation lives: its absolute path mirrored under ``projects_state``."""
    return Path(layout.project_dir(str(paths.state), os.fspath(project_dir)))


def write_project_activation(paths: Paths, project_dir: str | os.PathLike[str], name: str, env_key: str,
                             prefix: str | os.PathLike[str], variables: Sequence[tuple[str, str]] = (), *,
                             prompt: bool = True) -> bool:
    """Render a project's activation for every shell; after each good warm and each ``.env`` change.

    Returns whether anything changed: an identical rewrite keeps the generation, so the hook does not
    re-activate for nothing.
    """
    project = os.path.abspath(project_dir)
    # Written at publish; an env published before activation existed gets it now.
    facts = _stored_facts(paths, env_key, prefix) or write_env_activation(paths, env_key, prefix)
    warnings: list[str] = []
    act = Activation(name=name, facts=facts, project=project,
                     variables=_valid({k.upper(): str(v) for k, v in variables}, "variable", warnings),
                     secrets=_read_dotenv(Path(project) / ".env", warnings), prompt=prompt)
    for warning in warnings:
        log.warning("project %s: %s", project, warning)
    directory = project_activation_dir(paths, project)
    old = _read_json(directory / "activate.json")
    if old is not None and (directory / STAMP).is_file() and _same(old, act.to_wire()):
        return False
    act = replace(act, generation=f"{env_key[:12]}-{time.time_ns():x}")
    _private_dirs(paths.state, directory)
    for shell in SHELLS:
        write_atomic(directory / f"activate.{shell}", render_activation(act, shell), 0o600)
    write_atomic(directory / STAMP, act.generation + "\n", 0o600)  # last: the hook swaps when it changes
    log.info("activation of project %s: env %s, generation %s", project, env_key[:16], act.generation)
    return True


def refresh_project_activation(paths: Paths, project_dir: str | os.PathLike[str], *, prompt: bool = True) -> bool:
    """Re-render a project's activation after its ``.env`` changed, keeping its env and ``variables:``.

    Needs no spec parse, so a broken environment.yml does not hold a secret rotation back.
    Returns False when the project has no activation yet (its first good warm writes one).
    """
    data = _read_json(project_activation_dir(paths, project_dir) / "activate.json")
    if not isinstance(data, dict) or data.get("scheme") != SCHEME:
        return False
    return write_project_activation(paths, project_dir, data["name"], data["env_key"], data["prefix"],
                                    tuple(data.get("variables", {}).items()), prompt=prompt)


def remove_project_activation(paths: Paths, project_dir: str | os.PathLike[str]) -> None:
    """Forget a project's activation (unwatched, or gone); a shell with it active deactivates at its next prompt."""
    directory = project_activation_dir(paths, project_dir)
    for name in (STAMP, *(f"activate.{shell}" for shell in SHELLS)):  # the stamp first: the hook stops using it
        (directory / name).unlink(missing_ok=True)
    parent = directory
    # Prune empty dirs up to projects_state; a nested project's files keep their parents alive.
    while parent != paths.projects_state and paths.projects_state in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def write_project_notice(paths: Paths, project_dir: str | os.PathLike[str], key: str, message: str) -> None:
    """Leave the hook one line to print about a project (once per ``key``)."""
    directory = project_activation_dir(paths, project_dir)
    _private_dirs(paths.state, directory)
    line = " ".join(message.split())  # one line, whatever the error said
    write_atomic(directory / NOTICE, f"{key}\n{line}\n", 0o600)


def remove_project_notice(paths: Paths, project_dir: str | os.PathLike[str]) -> None:
    """All is well again: the hook has nothing to say about this project."""
    (project_activation_dir(paths, project_dir) / NOTICE).unlink(missing_ok=True)


def read_project_activation(paths: Paths, project_dir: str | os.PathLike[str], shell: str) -> str | None:
    """A project's pre-rendered activation for ``shell``, or None if its env is not ready yet."""
    try:
        return (project_activation_dir(paths, project_dir) / f"activate.{shell}").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def find_project_dir(start: str | os.PathLike[str]) -> Path | None:
    """The nearest directory at or above ``start`` that holds an environment file, like the hook's walk."""
    directory = Path(os.path.abspath(start))
    if directory.is_file():
        directory = directory.parent
    for candidate in (directory, *directory.parents):
        if any((candidate / name).is_file() for name in SPEC_FILES):
            return candidate
    return None


# -- rendering ---------------------------------------------------------------------------------

def render_activation(activation: Activation, shell: str) -> str:
    """The activation script for ``shell`` (bash, zsh, fish, sh), or its JSON form (json)."""
    if shell == "json":
        return _dumps(activation.to_wire(), indent=2)
    if shell not in SHELLS:
        raise ValueError(f"unknown shell {shell!r}; choose one of {', '.join(SHELLS)}")
    return activate_script(activation, shell)


def render_deactivation(shell: str) -> str:
    """The script that undoes the active provisiond activation, from what it saved in the environment."""
    if shell not in SHELLS or shell == "json":
        raise ValueError(f"no deactivation script for {shell!r}: a tool drops a JSON activation by itself")
    return deactivate_script(shell)


# -- helpers -----------------------------------------------------------------------------------

def _stored_facts(paths: Paths, env_key: str, prefix: str | os.PathLike[str] | None) -> EnvFacts | None:
    data = _read_json(paths.activation / env_key / ENV_FILE)
    if not isinstance(data, dict) or data.get("scheme") != SCHEME:
        return None
    if prefix is not None and data.get("prefix") != str(prefix):
        return None
    return EnvFacts.from_wire(data)


def _read_vars(file: Path, key: str | None, warnings: list[str]) -> dict[str, str]:
    """The string variables of one env_vars.d file (``key`` None) or of conda-meta/state's ``key``."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.append(f"{file}: ignored, not valid JSON ({type(exc).__name__})")
        return {}
    if key is not None:
        # A state file without env_vars is normal (rattler fails on it, contract §3.3).
        data = data.get(key, {}) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        warnings.append(f"{file}: ignored, not a JSON object")
        return {}
    out = {}
    for name, value in data.items():
        if isinstance(value, str):
            out[str(name)] = value
        else:
            warnings.append(f"{file}: {name} ignored, its value is not a string")
    return out


def _valid(pairs: Mapping[str, str], what: str, warnings: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in pairs.items():
        refused = reason_refused(name)
        if refused is not None:
            warnings.append(f"{what} {name!r} ignored: {refused}")
        elif "\0" in value:
            warnings.append(f"{what} {name} ignored: its value contains a NUL byte")
        else:
            out.append((name, value))
    return tuple(out)


def _read_dotenv(file: Path, warnings: list[str]) -> tuple[tuple[str, str], ...]:
    if not os.path.lexists(file):
        return ()
    data = read_regular(file, 1 << 20)  # a FIFO or /dev/zero from a clone: never read
    try:
        text = data.decode("utf-8") if data is not None else None
    except UnicodeDecodeError:
        text = None
    if text is None:
        warnings.append(f"{file}: ignored (not a regular UTF-8 file of at most 1 MiB)")
        return ()
    pairs, problems = parse_dotenv(text)
    warnings += [f"{file}: {problem}" for problem in problems]  # line numbers only, never values
    return _valid(dict(pairs), ".env", warnings)


def _scripts(directory: Path, ext: str, *, reverse: bool) -> tuple[str, ...]:
    if not directory.is_dir():
        return ()
    found = sorted((str(p) for p in directory.iterdir() if p.name.endswith(ext) and p.is_file()), reverse=reverse)
    return tuple(found)


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Equal but for the generation."""
    return _dumps({**old, "generation": ""}) == _dumps({**new, "generation": ""})


def _dumps(data: Any, indent: int | None = None) -> str:
    return json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"


def _read_text(file: Path) -> str | None:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _private_dirs(root: Path, directory: Path) -> None:
    """Create ``directory`` and every dir from ``root`` down to it with mode 0700 (makedirs would not)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    path = root
    for part in ("", *directory.relative_to(root).parts):
        path = path / part if part else path
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    os.chmod(root, 0o700)
