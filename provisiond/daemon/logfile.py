"""The daemon's log file (the ``log_file`` setting): opened at start-up, reopened on SIGHUP.

logrotate renames the file, then its ``postrotate`` sends SIGHUP: the daemon closes its stream and
opens the path again, so new lines go to a new file at the configured path and none are lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from provisiond.domain.errors import ConfigError

log = logging.getLogger(__name__)

# Always with timestamps: a file has no journal to add them.
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ReopenableFileHandler(logging.FileHandler):
    """A FileHandler whose ``reopen()`` starts writing to whatever file is at its path now."""

    def reopen(self) -> None:
        """Open the path again (the old file may have been renamed); on failure keep the old stream."""
        self.acquire()
        try:
            stream = self._open()
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


def log_to_file(path: Path, filters: Iterable[logging.Filter]) -> ReopenableFileHandler:
    """Send the daemon's log to ``path`` instead of stderr (``filters``: e.g. credential masking)."""
    try:
        handler = ReopenableFileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"log_file={path}: cannot open it: {exc.strerror or exc}",
                          hint="create its directory, or fix the path (--log-file, PROVISIOND_LOG_FILE)") from None
    handler.setFormatter(logging.Formatter(FORMAT))
    for log_filter in filters:
        handler.addFilter(log_filter)
    root = logging.getLogger()
    for old in root.handlers[:]:  # configure_logging's stderr handler
        root.removeHandler(old)
    root.addHandler(handler)
    return handler


def reopen_log_files() -> None:
    """Reopen every log file of the root logger (SIGHUP); a failure is logged and the old file kept."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                log.error("cannot reopen the log file %s: %s; still writing to the old one",
                          handler.baseFilename, exc.strerror or exc)
