"""What micromamba prints with ``--json``, read: records, the solver's explanation, failures (pure).

Split from ``micromamba.py`` (which runs micromamba) along the line the replay tests draw: these
functions see only text and JSON documents, recorded or live.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from provisiond.domain.lock import Lock, Package
from provisiond.engines._process import ProcessResult
from provisiond.store.pkgcache import in_micromamba_cache, scrub_file

__all__ = [
    "clean_conda_meta",
    "explicit_file",
    "extract_json",
    "is_cached",
    "is_unsolvable",
    "linked_records",
    "package_of",
]

_UNSOLVABLE = "Could not solve for environment specs"


def _virtual_of(info: Mapping[str, Any]) -> list[str]:
    return sorted(str(v) for v in info.get("virtual packages") or ())


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in micromamba's stdout, from the first ``{`` to the last ``}`` (as conda-lock does)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the output")
    doc = json.loads(text[start:end + 1])
    if not isinstance(doc, dict):
        raise ValueError("the JSON output is not an object")
    return doc


def _document(result: ProcessResult) -> dict[str, Any]:
    try:
        return extract_json(result.stdout)
    except ValueError:
        return {}  # a crash before the JSON was printed: the exit code and stderr tell the story


def linked_records(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The LINK records of a transaction, with hashes or sizes missing there taken from FETCH."""
    actions = doc.get("actions") or {}
    fetched = {r.get("url"): r for r in actions.get("FETCH") or () if isinstance(r, dict)}
    records = []
    for record in actions.get("LINK") or ():
        extra = fetched.get(record.get("url"), {})
        records.append({**extra, **{k: v for k, v in record.items() if v or k not in extra}})
    return records


def package_of(record: Mapping[str, Any]) -> Package:
    """Our Package from one LINK record (2.8.1 and newer print the same PackageInfo keys)."""
    url = str(record["url"])
    subdir = str(record.get("subdir") or "")
    file_name = str(record.get("fn") or url.rsplit("/", 1)[-1])
    return Package(
        name=str(record["name"]),
        version=str(record["version"]),
        build=_build(record),
        build_number=int(record.get("build_number") or 0),
        subdir=subdir,
        channel=channel_of(url, subdir, file_name),
        url=url,
        file_name=file_name,
        sha256=record.get("sha256") or None,
        md5=record.get("md5") or None,
        size=int(record["size"]) if record.get("size") else None,
        depends=tuple(record.get("depends") or ()),
        constrains=tuple(record.get("constrains") or ()),
        noarch=record.get("noarch") or None,
        timestamp=_milliseconds(record.get("timestamp")),
        license=record.get("license") or None,
    )


def _build(record: Mapping[str, Any]) -> str:
    return str(record.get("build_string") or record.get("build") or "")


def channel_of(url: str, subdir: str, file_name: str) -> str:
    """The channel base URL, with the trailing slash rattler uses (micromamba prints it without)."""
    suffix = f"/{subdir}/{file_name}"
    base = url[:-len(suffix)] if subdir and url.endswith(suffix) else url.rsplit("/", 2)[0]
    return base.rstrip("/") + "/"


def _milliseconds(value: Any) -> int | None:
    """Repodata timestamps are milliseconds; micromamba 2.8.1 prints seconds (1700000000)."""
    if not value:
        return None
    stamp = int(value)
    return stamp * 1000 if stamp < 100_000_000_000 else stamp  # 1e11 s is the year 5138


def is_unsolvable(doc: Mapping[str, Any], lines: list[str]) -> bool:
    """True when micromamba says the specs have no solution (not: it failed to run)."""
    messages = [*lines, *(str(e.get("message", "")) for e in doc.get("log_history") or () if isinstance(e, dict))]
    return "solver_problems" in doc or any(_UNSOLVABLE in m for m in messages)


def _explanation(lines: list[str], doc: Mapping[str, Any]) -> list[str]:
    """The solver's readable tree: stderr ``error`` lines (2.8.1) or ``log_history`` (newer)."""
    texts = [str(e.get("message", "")) for e in doc.get("log_history") or ()
             if isinstance(e, dict) and e.get("level") in ("error", "err")]
    block: list[str] = []
    for line in lines:
        if line.startswith("error ") or (block and line.startswith(" ")):
            block.append(re.sub(r"^error\s+\S+\s", "", line))
        elif block:
            texts.append("\n".join(block))
            block = []
    if block:
        texts.append("\n".join(block))
    out: list[str] = []
    for text in texts:
        for line in text.splitlines():
            line = line[4:] if line.startswith("    ") else line
            if line.strip() and line.strip() != _UNSOLVABLE and line not in out:
                out.append(line)
    return out


def _problems(doc: Mapping[str, Any], lines: list[str]) -> list[str]:
    """The explanation tree, then libsolv's one-line problems (``unsupported request`` only if alone)."""
    tree = _explanation(lines, doc)
    problems = [str(p) for p in doc.get("solver_problems") or () if not (tree and p == "unsupported request")]
    out = [f"  {line}" for line in tree] + [f"  problem: {p}" for p in problems]
    return out or ["  (micromamba gave no reason)"]


def _failure(step: str, result: ProcessResult, doc: Mapping[str, Any]) -> str:
    """``micromamba install into X failed (exit 1):`` and the last lines it wrote."""
    lines = [str(e.get("message", "")) for e in doc.get("log_history") or ()
             if isinstance(e, dict) and e.get("level") in ("error", "err", "critical")]
    lines += [line for line in result.output_tail if line.strip()]
    if result.returncode == 0 and doc.get("success") is not True:
        lines.append("micromamba printed no successful --json result")
    return f"micromamba {step} failed ({result.describe_exit()})" + "".join(f"\n  {line}" for line in lines)


def explicit_file(lock: Lock, attach: Callable[[str], str] = str) -> str:
    """An @EXPLICIT spec file (CEP 23) for ``lock``: one URL per line with its hash, no solver involved.

    ``attach`` puts a URL's channel credentials back (``Credentials.attach``).
    """
    lines = [f"# platform: {lock.platform}", f"# env_key: {lock.env_key}", "@EXPLICIT"]
    for p in lock.packages:
        url = attach(p.url)
        # libmamba reads `#sha256:<hex>` and `#<md5>` (specs/package_info.cpp, PackageInfo::from_url)
        lines.append(f"{url}#sha256:{p.sha256}" if p.sha256 else f"{url}#{p.md5}" if p.md5 else url)
    return "\n".join(lines) + "\n"


def is_cached(pkgs: Path, package: Package) -> bool:
    """True if micromamba finds ``package`` extracted or downloaded in ``pkgs``, so ``--offline`` is safe
    (both layouts: flat before 2.6, ``pkgs/file/…`` and ``pkgs/http/…`` since: ``store/pkgcache.py``)."""
    return in_micromamba_cache(pkgs, package)


def clean_conda_meta(prefix: Path) -> int:
    """Clean URLs in ``conda-meta``, as the rattler engine writes them; the number of files rewritten.

    micromamba 2.8.1 writes the credentials of an @EXPLICIT install's URLs into the records (``url``
    in clear, ``/t/*****/`` where it masks): neither belongs in the store.
    """
    meta = prefix / "conda-meta"
    return sum(scrub_file(path) for path in (meta.iterdir() if meta.is_dir() else ())
               if path.is_file() and (path.suffix == ".json" or path.name == "history"))
