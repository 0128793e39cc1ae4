"""The trust gate: the allow-list, and what a blocked or failing project tells the shell hook.

``trust.py`` computes fingerprints (pure); this module decides with them: a project (or a named
env's file) is built and activated only while its fingerprint is allowed, or it lies under a
``trusted_prefixes`` directory. A blocked project loses its activation (open shells deactivate at
their next prompt) and gets a one-line ``notice`` that the hook prints once. Failed builds and
broken files leave a notice too. See docs/activation.md, "Trust".
"""

from __future__ import annotations

import hashlib
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisiond.config.locations import SPEC_FILES
from provisiond.config.settings import Settings
from provisiond.daemon import trust
from provisiond.domain.errors import BadRequestError, BlockedError, EnvNotFoundError
from provisiond.domain.projectlock import LOCK_FILE
from provisiond.domain.spec import EnvSpec
from provisiond.domain.urls import mask
from provisiond.shell import activation
from provisiond.store.registry import NameRecord
from provisiond.store.store import Store

log = logging.getLogger(__name__)

KINDS = ("project", "file", "lock")  # the names whose content comes from a file the user may not control


class TrustGate:
    """Consent recorded by explicit commands, checked before every build of a project or env file."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings  # replaced on SIGHUP: trusted_prefixes may change
        # Called with a name when it becomes blocked (the lifecycle removes its Jupyter kernel).
        self.on_block: Callable[[str], None] | None = None

    def fingerprint(self, spec: EnvSpec, path: str, kind: str) -> trust.Fingerprint:
        """A project's fingerprint (its ``.env`` names included), or a named env file's."""
        if kind == "project":
            fp = trust.fingerprint(spec, path, Path(path) / ".env")
            # The project lock is installed as it is: it is covered like the file (docs/lockfiles.md).
            return trust.Fingerprint(fp.path, {**fp.parts, **trust.project_lock_part(Path(path) / LOCK_FILE)})
        return trust.fingerprint(spec, path)

    def relocked(self, record: NameRecord, before: trust.Fingerprint, after: trust.Fingerprint) -> None:
        """The daemon wrote a project's lock from content that was allowed as ``before``: the new
        lock is its own work, so the allowance follows it (a pulled lock is checked, not this)."""
        known = self.store.find_allowance(before.path)
        if after.digest != before.digest and known is not None and known.digest == before.digest:
            self.consent(after)
            log.info("%s: the allowance follows the lock it re-wrote", record.name)

    def consent(self, fp: trust.Fingerprint) -> None:
        """The user asked for this content by name: remember it as allowed."""
        known = self.store.find_allowance(fp.path)
        if known is None or known.digest != fp.digest:
            self.store.allow(fp.path, fp.digest, dict(fp.parts))
            log.info("allowed %s (fingerprint %s)", fp.path, fp.digest[:16])
        activation.remove_project_notice(self.settings.paths, fp.path)

    def check(self, record: NameRecord | None, fp: trust.Fingerprint, file_name: str) -> None:
        """Return if the content is allowed; else block it (no build, no activation) and raise.

        ``record`` is None for a directory the hook found that is not registered yet.
        """
        if trust.under_prefix(fp.path, self.settings.trusted_prefixes):
            return
        known = self.store.find_allowance(fp.path)
        if known is not None and known.digest == fp.digest:
            return
        if known is None:
            reason = f"its {file_name} is not allowed yet"
        else:
            base = fp.path if Path(fp.path).is_dir() else str(Path(fp.path).parent)
            reason = trust.what_changed(known.parts, fp.parts, base, file_name)
        message = trust.blocked_message(fp.path, reason)
        self._block(record, fp.path, message, f"blocked-{fp.digest[:16]}")
        raise BlockedError(message, hint=f"run: provisionctl allow {shlex.quote(fp.path)}")

    def dotenv_allowed(self, project: str) -> bool:
        """Whether the names in ``project``'s ``.env`` are those allowed (a rotated value keeps trust)."""
        if trust.under_prefix(project, self.settings.trusted_prefixes):
            return True
        known = self.store.find_allowance(project)
        return known is not None and known.parts.get("dotenv") == trust.dotenv_part(Path(project) / ".env")

    def deny(self, path: str) -> dict[str, Any]:
        """Revoke an allowance: its names stop building, a project's shells deactivate."""
        target = self.target(path)
        denied = self.store.deny(str(target))
        message = trust.blocked_message(str(target), "its allowance was revoked with 'provisionctl deny'")
        records = [r for r in self.store.list_names() if r.kind in KINDS and r.source == str(target)]
        for record in records:
            self._block(record, str(target), message, "denied")
        return {"path": str(target), "denied": denied, "names": [r.name for r in records]}

    def target(self, path: str) -> Path:
        """What an allowance of ``path`` is keyed to: the file of a named env (``create -f``), else
        the project directory (``path`` being the dir, or a file in it)."""
        if "\0" not in path and Path(path).is_file():
            file = Path(path).resolve()
            if file.name not in SPEC_FILES or any(r.source == str(file) for r in self.store.list_names("file")):
                return file
        return project_dir(path)

    def allowances(self) -> dict[str, Any]:
        return {"allowed": [a.to_wire() for a in self.store.list_allowances()],
                "trusted_prefixes": list(self.settings.trusted_prefixes)}

    def notify(self, record: NameRecord, message: str, command: str) -> None:
        """Tell the hook of a project's failure, once: the reason and the command that shows more."""
        if record.kind != "project" or not record.source:
            return
        line = mask(f"provisiond: {record.name}: {message}; see: {command}")
        try:
            activation.write_project_notice(self.settings.paths, record.source,
                                            hashlib.sha256(line.encode()).hexdigest()[:16], line)
        except OSError as exc:
            log.error("cannot write the notice of project %s: %s", record.source, exc)

    def clear(self, project: str) -> None:
        """All is well with ``project`` again: the hook has nothing to say."""
        activation.remove_project_notice(self.settings.paths, project)

    def _block(self, record: NameRecord | None, path: str, message: str, key: str) -> None:
        if record is not None:
            self.store.update_name(record.name, status="blocked", error=message)
            log.warning("%s", message)
            if self.on_block is not None:
                self.on_block(record.name)
        if record is None or record.kind == "project":
            activation.write_project_notice(self.settings.paths, path, key, message)
            activation.remove_project_activation(self.settings.paths, path)  # open shells deactivate


def project_dir(path: str) -> Path:
    """The real path of a project directory named by ``path`` (a directory, or a file in it)."""
    if "\0" in path:
        raise BadRequestError(f"{path!r} is not a path")
    directory = Path(path).expanduser().resolve()
    if directory.is_file():
        directory = directory.parent
    if not directory.is_dir():
        raise EnvNotFoundError(f"{directory}: no such directory")
    return directory
