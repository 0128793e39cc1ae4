"""Package archives into the package cache, as the engines' own fetch leaves them.

An entry is ``pkgs/<name>-<version>-<build>/``: the extracted archive, plus
``info/repodata_record.json`` (what conda and micromamba read to match an entry to a record).
rattler validates an entry on first use and writes its own ``.lock`` stamp beside it. Extraction
goes to a temporary directory renamed into place, so a half-extracted entry is never in sight.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from provisiond.domain.lock import Package
from provisiond.domain.oci import DigestMismatchError


def has(pkgs: Path, package: Package) -> bool:
    return (pkgs / package.dist / "info" / "index.json").is_file()


def insert(pkgs: Path, package: Package, archive: Path) -> None:
    """Extract ``archive`` (checked against the package's sha256/md5) as ``package``'s cache entry."""
    from rattler.package_streaming import extract  # the daemon has rattler loaded already

    final = pkgs / package.dist
    if has(pkgs, package):
        return
    pkgs.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".oci-extract-", dir=pkgs))
    try:
        sha256, md5 = extract(archive, scratch / "entry")
        if package.sha256 and sha256.hex() != package.sha256:
            raise DigestMismatchError(f"{package.file_name}: sha256 {sha256.hex()}, the lock says {package.sha256}")
        if package.md5 and md5.hex() != package.md5:
            raise DigestMismatchError(f"{package.file_name}: md5 {md5.hex()}, the lock says {package.md5}")
        index = json.loads((scratch / "entry" / "info" / "index.json").read_text(encoding="utf-8"))
        record = {**index, "url": package.url, "channel": package.channel, "fn": package.file_name,
                  "sha256": sha256.hex(), "md5": md5.hex(), "size": archive.stat().st_size}
        (scratch / "entry" / "info" / "repodata_record.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        if final.exists() and not has(pkgs, package):  # an old, incomplete entry
            shutil.rmtree(final, ignore_errors=True)
        try:
            (scratch / "entry").rename(final)
        except OSError:
            if not has(pkgs, package):  # else another pull (or the engine) put it there meanwhile
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
