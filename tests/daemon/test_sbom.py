"""SBOM inventory: purls, licenses from conda-meta and METADATA, credentials stripped (no daemon)."""

from __future__ import annotations

import json
from pathlib import Path

from provisiond.daemon.sbom import inventory
from provisiond.domain.lock import Lock, Package, PipPackage

ALIAS = "https://conda.anaconda.org/"


def package(name: str, channel: str, *, license: str | None = "MIT", depends: tuple[str, ...] = ()) -> Package:
    url = f"{channel}/linux-64/{name}-1.0-h0_0.tar.bz2"
    return Package(name=name, version="1.0", build="h0_0", build_number=0, subdir="linux-64", channel=channel,
                   url=url, file_name=url.rsplit("/", 1)[1], sha256="a" * 64, md5="b" * 32, license=license,
                   depends=depends)


def test_purls_licenses_and_dependencies(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    # conda-meta is what is installed: its license wins over the repodata's in the lock.
    (prefix / "conda-meta" / "numpy-1.0-h0_0.json").write_text(json.dumps({"name": "numpy", "license": "BSD-3-Clause"}))
    site = prefix / "lib" / "python3.11" / "site-packages" / "Tiny_Lib-2.0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.4\nName: Tiny_Lib\nVersion: 2.0\nLicense-Expression: Apache-2.0\n")
    lock = Lock(platform="linux-64", packages=(
        package("numpy", "https://conda.anaconda.org/conda-forge", license="BSD", depends=("python >=3.9", "libblas")),
        package("libblas", "https://user:s3cret@example.com/private"),
        package("python", "https://conda.anaconda.org/conda-forge", license=None)),
        pip=(PipPackage("Tiny_Lib", "2.0", "https://user:pw@pypi.example.com/tiny_lib-2.0-py3-none-any.whl", "c" * 64),))
    items = {i.ref: i for i in inventory(lock, prefix, ALIAS)}
    numpy = items["conda:numpy"]
    assert numpy.purl.to_string() == \
        "pkg:conda/numpy@1.0?build=h0_0&channel=conda-forge&subdir=linux-64&type=tar.bz2"
    assert numpy.license == "BSD-3-Clause" and numpy.depends == ("conda:libblas", "conda:python")
    private = items["conda:libblas"]
    assert "s3cret" not in private.purl.to_string() and "s3cret" not in private.url
    assert private.purl.qualifiers["channel"] == "https://example.com/private"
    assert items["conda:python"].license is None
    tiny = items["pypi:tiny-lib"]
    assert (tiny.purl.to_string(), tiny.license, tiny.sha256) == ("pkg:pypi/tiny-lib@2.0", "Apache-2.0", "c" * 64)
    assert tiny.url == "https://pypi.example.com/tiny_lib-2.0-py3-none-any.whl"
