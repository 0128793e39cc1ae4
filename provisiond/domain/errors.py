"""The one exception tree: every failure a user can see is a ProvisionError.

Each subclass pins a stable wire ``code``, an HTTP status and a process exit code, so an
error raised in the daemon reaches the CLI unchanged (see ``client.py``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar


class ProvisionError(Exception):
    """An error the user can act on; subclasses pin code, HTTP status and exit code."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = os.EX_SOFTWARE
    by_code: ClassVar[dict[str, type[ProvisionError]]] = {}

    def __init_subclass__(cls, *, code: str, http_status: int, exit_code: int, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.code, cls.http_status, cls.exit_code = code, http_status, exit_code
        ProvisionError.by_code[code] = cls

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}

    @classmethod
    def from_wire(cls, error: dict[str, Any]) -> ProvisionError:
        klass = cls.by_code.get(str(error.get("code")), ProvisionError)
        return klass(str(error.get("message", "unknown error")), hint=error.get("hint"))


class SpecError(ProvisionError, code="invalid-spec", http_status=400, exit_code=os.EX_DATAERR):
    """An environment file that cannot be used: the message starts with file:line:column."""


class BadRequestError(ProvisionError, code="bad-request", http_status=400, exit_code=os.EX_USAGE):
    """A request that is malformed (missing field, wrong type)."""


class RouteNotFoundError(ProvisionError, code="not-found", http_status=404, exit_code=os.EX_USAGE):
    """No such API route (e.g. an empty name in the URL): a client bug or a bad argument."""


class MethodNotAllowedError(ProvisionError, code="method-not-allowed", http_status=405, exit_code=os.EX_USAGE):
    """The route exists, not with that method."""


class ForbiddenError(ProvisionError, code="forbidden", http_status=403, exit_code=os.EX_NOPERM):
    """The peer is another user."""


class BlockedError(ProvisionError, code="project-blocked", http_status=403, exit_code=os.EX_NOPERM):
    """A project (or env file) whose current content the user has not allowed (trust.py)."""


class EnvNotFoundError(ProvisionError, code="env-not-found", http_status=404, exit_code=os.EX_NOINPUT):
    """No env or project by that name or path."""


class BuildNotFoundError(ProvisionError, code="build-not-found", http_status=404, exit_code=os.EX_NOINPUT):
    """No build with that id."""


class SolveError(ProvisionError, code="unsolvable", http_status=422, exit_code=os.EX_DATAERR):
    """The solver found no set of packages satisfying the spec."""


class EngineError(ProvisionError, code="engine-failed", http_status=502, exit_code=os.EX_SOFTWARE):
    """The engine failed while fetching or installing; the message names the build log."""


class ChannelTimeoutError(EngineError, code="channel-timeout", http_status=504, exit_code=os.EX_TEMPFAIL):
    """A channel server did not answer in time (``connect_timeout``, ``fetch_timeout`` or ``solve_timeout``);
    the message names the channel, the hint the setting."""


class OfflineError(EngineError, code="offline", http_status=503, exit_code=os.EX_TEMPFAIL):
    """Offline mode (``offline`` setting, ``--offline``) and something is not cached: repodata or packages."""


class ConfigError(ProvisionError, code="bad-config", http_status=500, exit_code=os.EX_CONFIG):
    """A setting that cannot be used (bad path, unknown engine, unreadable config file)."""


class StoreBusyError(ProvisionError, code="store-busy", http_status=409, exit_code=os.EX_TEMPFAIL):
    """Another provisiond already serves this store."""


class DaemonUnavailableError(ProvisionError, code="daemon-down", http_status=503, exit_code=os.EX_UNAVAILABLE):
    """provisionctl could not reach the daemon."""


class ShuttingDownError(ProvisionError, code="shutting-down", http_status=503, exit_code=os.EX_TEMPFAIL):
    """The daemon is stopping (SIGTERM): the build this request waited for was cancelled, the name kept
    its previous state. Retry once it is back (systemd's socket starts it again)."""


class BusyError(ProvisionError, code="busy", http_status=503, exit_code=os.EX_TEMPFAIL):
    """The daemon has as many connections open as it allows (``max_connections``)."""


class RequestTimeoutError(ProvisionError, code="request-timeout", http_status=408, exit_code=os.EX_TEMPFAIL):
    """A client stopped sending its request's body for ``read_timeout`` seconds."""


class NotRunnableError(ProvisionError, code="not-runnable", http_status=404, exit_code=127):
    """`run`: no such env or command here, or an env built for another store path (127, as in a shell)."""


class NotExecutableError(ProvisionError, code="not-executable", http_status=403, exit_code=126):
    """`run`: the command was found but cannot be executed (126, as in a shell)."""


class DiskFullError(ProvisionError, code="disk-full", http_status=507, exit_code=os.EX_CANTCREAT):
    """The store's filesystem is full (ENOSPC, or SQLite's "database or disk is full")."""


class PlatformError(SpecError, code="wrong-platform", http_status=400, exit_code=os.EX_DATAERR):
    """A file locked (or rendered) for another platform than the one asked for."""


class ChannelDataError(EngineError, code="bad-channel", http_status=502, exit_code=os.EX_DATAERR):
    """A channel's repodata that cannot be read (a ``null`` where a value belongs): the channel's fault."""
