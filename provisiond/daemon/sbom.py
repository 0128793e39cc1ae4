"""SBOMs of an env, built with the reference libraries: CycloneDX 1.6 (cyclonedx-python-lib) or SPDX 2.3 (spdx-tools).

The root component is the env itself (its name, and its env_key as version and reference); its
components are the lock's conda packages (purl ``pkg:conda/NAME@VERSION?build=&channel=&subdir=&type=``)
and the ``pip:`` packages (``pkg:pypi/NAME@VERSION``), with their hashes from the lock, licenses
from ``conda-meta`` (conda) or the installed ``METADATA`` (pip), download URLs without credentials,
and the conda dependency graph. Both libraries are imported only when an SBOM is asked for.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from provisiond import __version__
from provisiond.domain.errors import BadRequestError
from provisiond.domain.lock import Lock
from provisiond.domain.urls import strip_credentials
from provisiond.store.registry import NameRecord

FORMATS = ("cyclonedx", "spdx")


@dataclass(frozen=True, slots=True)
class Item:
    """One package of the env, as both formats describe it."""

    ref: str
    source: str  # conda or pip
    name: str
    version: str
    purl: Any  # packageurl.PackageURL
    url: str
    sha256: str | None
    md5: str | None
    license: str | None
    depends: tuple[str, ...]  # refs


def build(record: NameRecord, lock: Lock, prefix: Path, fmt: str, channel_alias: str) -> str:
    """The SBOM of ``record``'s env as JSON text (call in a thread: it reads conda-meta)."""
    if fmt not in FORMATS:
        raise BadRequestError(f"unknown SBOM format {fmt!r}", hint=f"choose one of: {', '.join(FORMATS)}")
    items = inventory(lock, prefix, channel_alias)
    return _cyclonedx(record, lock, prefix, items) if fmt == "cyclonedx" else _spdx(record, lock, prefix, items)


def inventory(lock: Lock, prefix: Path, channel_alias: str) -> list[Item]:
    """The env's packages with purls, hashes, licenses and dependencies."""
    from packageurl import PackageURL

    licenses = _conda_licenses(prefix)
    names = {p.name: f"conda:{p.name}" for p in lock.packages}
    items = []
    for p in lock.packages:
        kind = "conda" if p.file_name.endswith(".conda") else "tar.bz2"
        qualifiers = {"build": p.build, "channel": _channel(p.channel, channel_alias), "subdir": p.subdir,
                      "type": kind}
        deps = tuple(sorted({names[d] for d in (s.split()[0] for s in p.depends if s.split()) if d in names}))
        items.append(Item(f"conda:{p.name}", "conda", p.name, p.version,
                          PackageURL(type="conda", name=p.name, version=p.version, qualifiers=qualifiers),
                          strip_credentials(p.url), p.sha256, p.md5, licenses.get(p.name) or p.license, deps))
    dists = _pip_licenses(prefix)
    for pin in lock.pip:
        name = re.sub(r"[-_.]+", "-", pin.name).lower()
        purl = PackageURL(type="pypi", name=name, version=pin.version or None)
        items.append(Item(f"pypi:{name}", "pip", pin.name, pin.version, purl, strip_credentials(pin.url),
                          pin.sha256, None, dists.get(name), ()))
    return items


def _channel(channel: str, alias: str) -> str:
    """conda-forge for a channel on the channel alias (anaconda.org), else its URL without credentials."""
    clean = strip_credentials(channel).rstrip("/")
    if alias and clean.startswith(alias.rstrip("/") + "/"):
        return clean[len(alias.rstrip("/")) + 1:]
    return clean


def _conda_licenses(prefix: Path) -> dict[str, str]:
    """Package name -> the ``license`` of its conda-meta record."""
    found = {}
    for file in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str) and isinstance(data.get("license"), str):
            found[data["name"]] = data["license"]
    return found


def _pip_licenses(prefix: Path) -> dict[str, str]:
    """Normalised distribution name -> its License-Expression (or a one-line License) from METADATA."""
    found = {}
    for metadata in prefix.glob("lib/python*/site-packages/*.dist-info/METADATA"):
        try:
            headers = HeaderParser().parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        name = headers.get("Name")
        value = headers.get("License-Expression") or headers.get("License")
        if name and value and "\n" not in value.strip() and len(value) < 200:
            found[re.sub(r"[-_.]+", "-", name).lower()] = value.strip()
    return found


def _root_properties(record: NameRecord, lock: Lock, prefix: Path) -> dict[str, str]:
    props = {"provisiond:env_key": lock.env_key, "provisiond:platform": lock.platform,
             "provisiond:prefix": str(prefix), "provisiond:kind": record.kind}
    if record.kind == "project" and record.source:
        props["provisiond:project"] = record.source
    return props


def _cyclonedx(record: NameRecord, lock: Lock, prefix: Path, items: list[Item]) -> str:
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    licenses = LicenseFactory()
    root = Component(type=ComponentType.APPLICATION, name=record.name, version=lock.env_key,
                     bom_ref=f"env:{lock.env_key}", description=f"conda environment {record.name} ({lock.platform})",
                     properties=[Property(name=k, value=v) for k, v in _root_properties(record, lock, prefix).items()])
    bom = Bom()
    bom.metadata.component = root
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="provisiond",
                                                version=__version__))
    components = {}
    for item in items:
        hashes = [HashType(alg=HashAlgorithm.SHA_256, content=item.sha256)] if item.sha256 else []
        hashes += [HashType(alg=HashAlgorithm.MD5, content=item.md5)] if item.md5 else []
        refs = [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(item.url))] if item.url else []
        component = Component(type=ComponentType.LIBRARY, name=item.name, version=item.version or None,
                              bom_ref=item.ref, purl=item.purl, hashes=hashes, external_references=refs,
                              licenses=[licenses.make_from_string(item.license)] if item.license else [],
                              properties=[Property(name="provisiond:source", value=item.source)])
        components[item.ref] = component
        bom.components.add(component)
    bom.register_dependency(root, components.values())
    for item in items:
        bom.register_dependency(components[item.ref], [components[d] for d in item.depends])
    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    return text + "\n"


def _spdx_id(ref: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", ref)


def _spdx(record: NameRecord, lock: Lock, prefix: Path, items: list[Item]) -> str:
    import io

    from spdx_tools.common.spdx_licensing import spdx_licensing  # type: ignore[import-untyped]  # no py.typed
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Package,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    def license_of(text: str | None) -> Any:
        if not text:
            return SpdxNoAssertion()
        try:
            return spdx_licensing.parse(text, validate=True, strict=True)
        except Exception:  # license_expression raises several kinds for a non-SPDX text
            return SpdxNoAssertion()

    root_id = _spdx_id(f"env-{lock.env_key[:16]}")
    info = CreationInfo(spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"provisiond env {record.name}",
                        document_namespace=f"https://spdx.org/spdxdocs/provisiond-{record.name}-{uuid.uuid4()}",
                        creators=[Actor(ActorType.TOOL, f"provisiond-{__version__}")],
                        created=datetime.now(UTC).replace(microsecond=0))
    comment = "; ".join(f"{k}={v}" for k, v in _root_properties(record, lock, prefix).items())
    packages = [Package(spdx_id=root_id, name=record.name, version=lock.env_key,
                        download_location=SpdxNoAssertion(), files_analyzed=False, comment=comment)]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, root_id)]
    for item in items:
        checksums = [Checksum(ChecksumAlgorithm.SHA256, item.sha256)] if item.sha256 else []
        checksums += [Checksum(ChecksumAlgorithm.MD5, item.md5)] if item.md5 else []
        declared = license_of(item.license)
        packages.append(Package(
            spdx_id=_spdx_id(item.ref), name=item.name, version=item.version or None,
            # SPDX accepts http(s), git and similar locations; a local channel's file:// URL goes to source_info.
            download_location=item.url if item.url.startswith(("https://", "http://")) else SpdxNoAssertion(),
            source_info=None if item.url.startswith(("https://", "http://")) or not item.url else f"from {item.url}",
            files_analyzed=False, checksums=checksums,
            license_declared=declared, license_concluded=SpdxNoAssertion(),
            license_comment=item.license if item.license and isinstance(declared, SpdxNoAssertion) else None,
            copyright_text=SpdxNoAssertion(),
            external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl",
                                                    item.purl.to_string())]))
        relationships.append(Relationship(root_id, RelationshipType.CONTAINS, _spdx_id(item.ref)))
        relationships += [Relationship(_spdx_id(item.ref), RelationshipType.DEPENDS_ON, _spdx_id(d))
                          for d in item.depends]
    document = Document(info, packages=packages, relationships=relationships)
    problems = validate_full_spdx_document(document)
    if problems:  # a bug of ours: say what the validator found
        raise RuntimeError("invalid SPDX document: " + "; ".join(p.validation_message for p in problems[:5]))
    stream = io.StringIO()
    write_document_to_stream(document, stream, validate=False)
    return stream.getvalue() + "\n"
