"""The micromamba that tests and benchmarks run: on PATH, in PROVISIOND_MICROMAMBA_PATH, or the
relocatable build beside the checkout (``../shared/tools/micromamba/bin/micromamba``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

SHARED_MICROMAMBA = Path(__file__).resolve().parents[2].parent / "shared/tools/micromamba/bin/micromamba"
MISSING = ("no micromamba: not on PATH, not in PROVISIOND_MICROMAMBA_PATH, not at "
           f"{SHARED_MICROMAMBA} (install micromamba 2.x, see docs/micromamba.md)")


def find_test_micromamba(environ: Mapping[str, str] | None = None) -> Path | None:
    """The first executable micromamba of PATH, ``PROVISIOND_MICROMAMBA_PATH``, ../shared; else None."""
    environ = os.environ if environ is None else environ
    found = shutil.which("micromamba", path=environ.get("PATH", os.defpath))
    candidates = [found, environ.get("PROVISIOND_MICROMAMBA_PATH"), str(SHARED_MICROMAMBA)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate).absolute()
    return None
