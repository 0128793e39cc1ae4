"""Jupyter kernelspecs for ready envs that hold ``ipykernel``, written where jupyter_client looks.

Each name (a project or a named env) whose env has ``ipykernel`` gets
``<jupyter data dir>/kernels/provisiond-<name>/kernel.json``, display name ``Python (<name>)``.
Its argv starts the env's python through provisiond's own activation, as a shell would: a lease on
the env (so gc keeps it while the kernel runs; ``exec`` keeps the pid), then the pre-rendered
``activate.sh`` of the name (store) or of the project (state dir, with its ``.env`` values), which
sources the ``activate.d`` scripts and exports ``variables:``. The spec is rewritten whenever the
name points at another env (same kernel name, new prefix) and removed with the name. JupyterLab
reads plain files: nothing runs at its start-up (nb_conda_kernels runs ``conda`` every time).

Only specs carrying our metadata for this store (``metadata.provisiond.home``) are ever changed
or removed: a user's own kernel, or another store's, of the same name is left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from provisiond.config.settings import Settings
from provisiond.domain.errors import ProvisionError
from provisiond.shell import activation
from provisiond.store.files import write_atomic
from provisiond.store.names import name_activation_dir
from provisiond.store.registry import NameRecord
from provisiond.store.store import Store

log = logging.getLogger(__name__)

PREFIX = "provisiond-"
# $1 lease file base, $2 activation script, then the command. `true >file` (not `:`): a failed
# redirection must not end the script (dash). `exec` keeps the pid, so the lease lasts exactly as
# long as the kernel.
LAUNCH = ('true 2>/dev/null >"$1.$$"; '
          'if [ ! -f "$2" ]; then echo "provisiond: no activation at $2 (the env was removed, or its project '
          'is blocked): see provisionctl kernels" >&2; exit 127; fi; '
          '. "$2"; shift 2; exec "$@"')
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def kernel_name(name: str) -> str:
    """The kernel's name for env ``name``: jupyter_client allows ``[a-z0-9._-]`` and folds case, so
    a name that needs changing gets a short hash of the original to stay unique."""
    safe = _UNSAFE.sub("-", name.lower()).strip("-.") or "env"
    if safe != name:
        safe = f"{safe[:80]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return PREFIX + safe


def has_ipykernel(store: Store, env_key: str) -> bool:
    """Does the env's lock hold ipykernel, as a conda package or from ``pip:``?"""
    try:
        lock = store.read_lock(env_key)
    except (ProvisionError, OSError):
        return False
    return any(p.name == "ipykernel" for p in lock.packages) or \
        any(re.sub(r"[-_.]+", "-", p.name).lower() == "ipykernel" for p in lock.pip)


class Kernels:
    """Writes, rewrites and removes this store's kernelspecs; the lifecycle calls it."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._ipykernel: dict[str, bool] = {}  # per env_key: an env never changes

    def _has_ipykernel(self, env_key: str) -> bool:
        found = self._ipykernel.get(env_key)
        if found is None:
            found = self._ipykernel[env_key] = has_ipykernel(self.store, env_key)
        return found

    @property
    def directory(self) -> Path | None:
        """``<jupyter data dir>/kernels``, or None when kernels are off (or no data dir is known)."""
        if not self.settings.kernels or self.settings.jupyter_data_dir is None:
            return None
        return self.settings.jupyter_data_dir / "kernels"

    def apply(self, settings: Settings) -> None:
        before = (self.settings.kernels, self.settings.jupyter_data_dir)
        old_dir = self.directory
        self.settings = settings
        if before != (settings.kernels, settings.jupyter_data_dir):
            if old_dir is not None and old_dir != self.directory:
                self._remove_all(old_dir)
            self.sync()

    # -- one name ---------------------------------------------------------------------------------

    def publish(self, name: str) -> Path | None:
        """Write (or rewrite) the kernelspec of ``name`` if its env is ready and holds ipykernel;
        otherwise remove a spec we wrote for it. Returns the spec's directory, if any."""
        directory = self.directory
        if directory is None:
            return None
        record = self.store.find_name(name)
        target = directory / kernel_name(name)
        try:
            spec = self._spec(record) if record is not None else None
            if spec is None:
                self.withdraw(name)
                return None
            if not self._ours_or_free(target):
                log.warning("kernel %s: %s exists and is not provisiond's for this store; left alone",
                            name, target)
                return None
            target.mkdir(parents=True, exist_ok=True)
            text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
            if _read(target / "kernel.json") != text:
                self._copy_logos(Path(spec["metadata"]["provisiond"]["prefix"]), target)
                write_atomic(target / "kernel.json", text, 0o644)
                log.info("kernel %s: %s (env %s)", target.name, spec["display_name"],
                         spec["metadata"]["provisiond"]["env_key"][:16])
        except OSError as exc:  # the env is fine; the next publish tries again
            log.error("cannot write the kernelspec of %r in %s: %s", name, directory, exc)
            return None
        return target

    def withdraw(self, name: str) -> None:
        """Remove ``name``'s kernelspec, if it is ours."""
        directory = self.directory
        if directory is None:
            return
        target = directory / kernel_name(name)
        if self._owner(target) == str(self.store.paths.home):
            shutil.rmtree(target, ignore_errors=True)
            log.info("kernel %s removed", target.name)

    # -- every name ---------------------------------------------------------------------------------

    def sync(self) -> None:
        """Make the specs on disk match the names: at start-up, after gc and after a settings change."""
        directory = self.directory
        if directory is None:  # opted out: what an earlier run wrote goes
            if self.settings.jupyter_data_dir is not None:
                self._remove_all(self.settings.jupyter_data_dir / "kernels")
            return
        wanted = {kernel_name(r.name): r.name for r in self.store.list_names()}
        for name in wanted.values():
            self.publish(name)
        for entry in self._ours(directory):
            if entry.name not in wanted:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("kernel %s removed (its name is gone)", entry.name)

    def listing(self) -> dict[str, Any]:
        """What ``provisionctl kernels`` shows: the specs written, and ready envs without ipykernel."""
        directory = self.directory
        kernels = []
        for entry in self._ours(directory) if directory is not None else ():
            data = json.loads(_read(entry / "kernel.json") or "{}")
            meta = data.get("metadata", {}).get("provisiond", {})
            kernels.append({"kernel": entry.name, "name": meta.get("name"), "display_name": data.get("display_name"),
                            "env_key": meta.get("env_key"), "prefix": meta.get("prefix"),
                            "activation": meta.get("activation"), "path": str(entry / "kernel.json")})
        written = {k["name"] for k in kernels}
        without = sorted(r.name for r in self.store.list_names()
                         if r.env_key and r.name not in written and self.store.find_env(r.env_key) is not None
                         and not self._has_ipykernel(r.env_key))
        return {"enabled": self.settings.kernels, "directory": str(directory) if directory else None,
                "kernels": sorted(kernels, key=lambda k: k["kernel"]), "without_ipykernel": without}

    # -- helpers ------------------------------------------------------------------------------------

    def _spec(self, record: NameRecord) -> dict[str, Any] | None:
        """The kernel.json of a name whose env is published and holds ipykernel, else None."""
        if not record.env_key or record.status == "blocked":
            return None
        prefix = self.store.find_env(record.env_key)
        if prefix is None or not self._has_ipykernel(record.env_key):
            return None
        paths = self.settings.paths
        if record.kind == "project" and record.source:  # with the project's variables: and .env values
            script = activation.project_activation_dir(paths, record.source) / "activate.sh"
        else:
            directory = name_activation_dir(paths, record.name)
            if directory is None:
                return None
            script = directory / "activate.sh"
        python = Path(prefix) / "bin" / "python"
        lease = paths.leases / record.env_key
        paths.leases.mkdir(parents=True, exist_ok=True)
        return {
            "argv": ["/bin/sh", "-c", LAUNCH, "provisiond-kernel", str(lease), str(script), str(python),
                     "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({record.name})",
            "language": "python",
            "interrupt_mode": "signal",
            "metadata": {"debugger": True, "provisiond": {
                "name": record.name, "kind": record.kind, "env_key": record.env_key, "prefix": str(prefix),
                "activation": str(script), "home": str(paths.home)}},
        }

    def _owner(self, target: Path) -> str | None:
        """The store home recorded in a spec we wrote, else None."""
        try:
            data = json.loads(_read(target / "kernel.json") or "null")
            home = data["metadata"]["provisiond"]["home"]
        except (ValueError, TypeError, KeyError):
            return None
        return home if isinstance(home, str) else None

    def _ours_or_free(self, target: Path) -> bool:
        return not target.exists() or self._owner(target) == str(self.store.paths.home)

    def _ours(self, directory: Path) -> list[Path]:
        try:
            entries = [e for e in directory.iterdir() if e.name.startswith(PREFIX) and e.is_dir()]
        except OSError:
            return []
        home = str(self.store.paths.home)
        return sorted(e for e in entries if self._owner(e) == home)

    def _remove_all(self, directory: Path) -> None:
        for entry in self._ours(directory):
            shutil.rmtree(entry, ignore_errors=True)

    @staticmethod
    def _copy_logos(prefix: Path, target: Path) -> None:
        """ipykernel's logos, so JupyterLab's launcher shows them (ipykernel installs them as data files)."""
        source = prefix / "share" / "jupyter" / "kernels" / "python3"
        for logo in LOGOS:
            if (source / logo).is_file():
                shutil.copyfile(source / logo, target / logo)


def _read(file: Path) -> str | None:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
