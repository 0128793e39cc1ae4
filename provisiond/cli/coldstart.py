"""``provisionctl run NAME|PATH -- CMD``: a command inside an env, with no daemon once the env is ready.

The daemon renders every name's activation into the store (``activation/names/<name>/``, no
secrets) and every project's into the per-user state dir (with its ``.env`` values). ``run`` reads
that JSON, builds the environment here, takes a lease on the env and ``exec``s the command: the pid
stays the same, so the lease lasts exactly as long as the command, and the caller sees the
command's own exit code and signals. ``activate.d`` scripts are shell code: an env that has them
runs the command through ``/bin/sh``, which sources the pre-rendered ``activate.sh`` and ``exec``s.

Only an env that is not ready yet costs a request to the daemon. No aiohttp, ruamel or rattler, and
on the ready path of a NAME not even ``activation`` (DESIGN.md, "Cold start"). The commonest form,
``run NAME -- CMD`` of a ready env, does not come here at all: ctl.py's fast path takes the lease
and execs through ``activate.sh``, as ``scripts/cold-start`` does, without argparse or json.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from provisiond.config import layout
from provisiond.config.settings import Paths
from provisiond.domain.errors import (
    BadRequestError,
    DaemonUnavailableError,
    EnvNotFoundError,
    NotExecutableError,
    NotRunnableError,
)
from provisiond.store.names import target_of_name

__all__ = ["Target", "activated_environ", "command_line", "find", "run", "target_of_name"]

NAMES_DIR, NAME_TARGET, MARKER = layout.NAMES, layout.NAME_TARGET, layout.MARKER
# activate.sh takes the command as "$@"; `exec` keeps the pid (and the lease) of `run`.
SOURCE_AND_EXEC = '. "$1"; shift; exec "$@"'


@dataclass(frozen=True, slots=True)
class Target:
    """A ready activation: its JSON form and the POSIX sh script rendered with it."""

    label: str
    data: Mapping[str, Any]
    script: Path

    @property
    def env_key(self) -> str:
        return str(self.data["env_key"])

    @property
    def prefix(self) -> str:
        return str(self.data["prefix"])


def find(paths: Paths, target: str, *, is_path: bool) -> Target | None:
    """The ready activation of a name (in the store) or a project (in the state dir), else None."""
    if is_path:
        directory = _project_activation_dir(paths, target)
    elif target_of_name(paths, target) is not None:
        directory = paths.activation / NAMES_DIR / target
    else:
        return None
    try:
        data = json.loads((directory / "activate.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("scheme") != 1 or not (directory / "activate.sh").is_file():
        return None
    return Target(label=target, data=data, script=directory / "activate.sh")


def activated_environ(paths: Paths, data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the activation applied, as sourcing its ``activate.sh`` would leave it.

    The same bookkeeping too (``_PROVISIOND_*``), so a shell started in it can deactivate.
    """
    values = {k: v for k, v in data["set"].items() if k != "CONDA_SHLVL"}
    names = ["PATH", "CONDA_SHLVL", *values]
    env = dict(environ)
    for name in names:
        if name in environ:
            env[f"_PROVISIOND_OLD_{name}"] = environ[name]
        else:
            env.pop(f"_PROVISIOND_OLD_{name}", None)
    prepend = ":".join(data["path_prepend"])
    path = environ.get("PATH", "")
    env.update(values)
    env["PATH"] = f"{prepend}:{path}" if path else prepend
    env["CONDA_SHLVL"] = str(_level(environ.get("CONDA_SHLVL", "")) + 1)
    env.update({"_PROVISIOND_ACTIVE": data["name"], "_PROVISIOND_GEN": data.get("generation", ""),
                "_PROVISIOND_ENV": str(paths.activation / data["env_key"]), "_PROVISIOND_PREPEND": prepend,
                "_PROVISIOND_VARS": " ".join(names), "_PROVISIOND_LOCAL": ""})
    if data.get("project"):
        env["_PROVISIOND_PROJECT"] = data["project"]
    else:
        env.pop("_PROVISIOND_PROJECT", None)
    return env


def command_line(paths: Paths, target: Target, command: Sequence[str],
                 environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to exec: the command itself, or /bin/sh when shell code must run."""
    # activate.d scripts are shell code; an activation active in the caller is undone by activate.sh.
    if target.data.get("scripts") or "_PROVISIOND_ACTIVE" in environ:
        return ["/bin/sh", "-c", SOURCE_AND_EXEC, "provisionctl", str(target.script), *command], dict(environ)
    return list(command), activated_environ(paths, target.data, environ)


def run(paths: Paths, target: str, command: Sequence[str], *, is_path: bool,
        environ: Mapping[str, str] = os.environ) -> NoReturn:
    """Exec ``command`` in the env of ``target``; asks the daemon only when the env is not ready."""
    if not command:
        raise BadRequestError("no command to run", hint="provisionctl run NAME|PATH -- CMD [ARGS...]")
    found = find(paths, target, is_path=is_path)
    if found is not None and (why := _moved(paths, found)):
        raise NotRunnableError(why)
    if found is None or not _published(found.prefix):
        _warm(paths, target, is_path=is_path)
        found = find(paths, target, is_path=is_path)
        if found is None:
            where = "in the state dir" if is_path else "in the store (a name must be a plain file name)"
            raise NotRunnableError(f"{target}: its env is ready but has no activation {where}")
    from provisiond.store.gc import lease_path, take_lease

    try:
        take_lease(paths, found.env_key)
    except OSError:
        pass  # a read-only store (an image) has no collector to guard against
    if not _published(found.prefix):  # removed between the check and the lease
        lease_path(paths, found.env_key, os.getpid()).unlink(missing_ok=True)
        raise NotRunnableError(f"{target}: its env {found.prefix} was removed; warm it again")
    argv, env = command_line(paths, found, command, environ)
    _exec(argv, env, found.data.get("name", target))


# -- helpers -----------------------------------------------------------------------------------

def _project_activation_dir(paths: Paths, target: str) -> Path:
    from provisiond.shell import activation  # its renderers cost ~8 ms: only projects pay them

    project = activation.find_project_dir(target)
    if project is None:
        raise NotRunnableError(f"{target}: no environment.yml in this directory or above")
    return activation.project_activation_dir(paths, project.resolve())


def _published(prefix: str) -> bool:
    return os.path.isfile(os.path.join(prefix, MARKER))


def _moved(paths: Paths, target: Target) -> str | None:
    """Why an env cannot run here when its store was copied from another path, else None."""
    built_for = os.path.dirname(os.path.dirname(target.prefix))
    if _published(target.prefix) or os.path.realpath(built_for) == os.path.realpath(paths.home):
        return None
    return (f"env {target.label!r} was built for the store at {built_for}: its prefix {target.prefix} is "
            f"not here (a store works only at the path it was built at, not {paths.home})")


def _warm(paths: Paths, target: str, *, is_path: bool) -> None:
    """Ask the daemon to make the env ready; 'no such env' becomes one line and exit 127."""
    from provisiond.cli.client import Client, segment

    client = Client(paths.socket)
    try:
        name = target
        if is_path:
            from provisiond.shell import activation

            project = activation.find_project_dir(target)
            if project is None:
                raise NotRunnableError(f"{target}: no environment.yml in this directory or above")
            name = client.post("/v1/projects", {"path": str(project.resolve()), "warm": False, "allow": True})["name"]
        client.post(f"/v1/envs/{segment(name)}/warm", {})
    except EnvNotFoundError:
        raise NotRunnableError(f"no env named {target!r} (see: provisionctl list)") from None
    except DaemonUnavailableError as exc:
        exc.message = f"no ready env {target!r} in {paths.home}, and {exc.message}"
        raise


def _level(value: str) -> int:
    """CONDA_SHLVL as activate.sh reads it: a plain non-negative integer, else 0."""
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        return 0
    return int(value)


def _exec(argv: list[str], env: dict[str, str], name: str) -> NoReturn:
    # Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec (subprocess resets them too).
    for sig in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, sig):
            signal.signal(getattr(signal, sig), signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise NotRunnableError(f"{argv[0]}: command not found (env {name!r}, or PATH)") from None
    except OSError as exc:
        raise NotExecutableError(f"{argv[0]}: cannot execute: {exc.strerror}") from None
