"""store/pkgcache.py on a temp dir: both engines' cache layouts, as gc and is_cached read them."""

from __future__ import annotations

import json
from pathlib import Path

from provisiond.domain.lock import Package
from provisiond.store import pkgcache


def package(url: str, name: str = "hello", version: str = "2.0", build: str = "0") -> Package:
    file_name = url.rsplit("/", 1)[-1]
    return Package(name=name, version=version, build=build, build_number=0, subdir=url.rsplit("/", 2)[-2],
                   channel=url.rsplit("/", 2)[0] + "/", url=url, file_name=file_name, sha256="ab" * 32, size=10)


def extracted(entry: Path, record: bool) -> Path:
    (entry / "info").mkdir(parents=True)
    (entry / "info" / "index.json").write_text("{}")
    (entry / "lib.so").write_bytes(b"x" * 100)
    if record:
        (entry / "info" / "repodata_record.json").write_text("{}")
    return entry


def test_micromamba_folders_follow_the_url_without_credentials(tmp_path: Path) -> None:
    assert pkgcache.micromamba_dir(tmp_path, "http://u:pw@127.0.0.1:8080/t/tok/ch/linux-64/a-1-0.conda") == \
        tmp_path / "http" / "127.0.0.1_8080" / "ch" / "linux-64"
    assert pkgcache.micromamba_dir(tmp_path, "https://conda.anaconda.org/conda-forge/noarch/a-1-0.conda") == \
        tmp_path / "http" / "conda.anaconda.org" / "conda-forge" / "noarch"
    assert pkgcache.micromamba_dir(tmp_path, "file:///srv/my%20ch/linux-64/a-1-0.tar.bz2") == \
        tmp_path / "file" / "srv" / "my ch" / "linux-64"
    assert pkgcache.micromamba_dir(tmp_path, "s3://bucket/ch/linux-64/a-1-0.conda") is None


def test_is_cached_in_either_micromamba_layout(tmp_path: Path) -> None:
    p = package("http://h:81/ch/linux-64/hello-2.0-0.conda")
    assert not pkgcache.in_micromamba_cache(tmp_path, p)
    extracted(tmp_path / "hello-2.0-0", record=False)  # rattler's: not micromamba's
    assert not pkgcache.in_micromamba_cache(tmp_path, p) and pkgcache.in_rattler_cache(tmp_path, p)
    folder = tmp_path / "http" / "h_81" / "ch" / "linux-64"
    folder.mkdir(parents=True)
    (folder / "hello-2.0-0.conda").write_bytes(b"archive")
    assert pkgcache.in_micromamba_cache(tmp_path, p)


def test_share_hardlinks_rattlers_entry_with_the_record_micromamba_checks(tmp_path: Path) -> None:
    p = package("file:///srv/ch/linux-64/hello-2.0-0.conda")
    source = extracted(tmp_path / "hello-2.0-0", record=False)
    assert pkgcache.share(tmp_path, [p], "micromamba") == ["hello-2.0-0"]
    target = pkgcache.micromamba_entry(tmp_path, p)
    assert target is not None and (target / "lib.so").stat().st_ino == (source / "lib.so").stat().st_ino
    record = json.loads((target / "info" / "repodata_record.json").read_text())
    assert (record["url"], record["sha256"], record["fn"]) == (p.url, p.sha256, p.file_name)
    assert not (source / "info" / "repodata_record.json").exists()  # rattler's entry is left as it was
    assert pkgcache.share(tmp_path, [p], "micromamba") == []  # already there
    assert pkgcache.share(tmp_path, [p], "rattler") == []  # rattler has its own


def test_entries_group_both_layouts_and_skip_the_bookkeeping(tmp_path: Path) -> None:
    extracted(tmp_path / "hello-2.0-0", record=False)
    (tmp_path / "hello-2.0-0.lock").write_text("")
    (tmp_path / "gone-1-0.lock").write_text("")  # rattler's lock of an entry already removed
    folder = tmp_path / "file" / "srv" / "ch" / "linux-64"
    extracted(folder / "hello-2.0-0", record=True)
    (folder / "hello-2.0-0.conda").write_bytes(b"archive")
    (folder / "urls.txt").write_text("file:///srv/ch/linux-64/hello-2.0-0.conda\n")
    extracted(tmp_path / "http" / "h" / "linux-64" / "tool-1.0-1", record=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "abc.json").write_text("{}")
    (tmp_path / "urls.txt").write_text("")
    (tmp_path / ".cache.lock").write_text("")
    found = {e.dist: sorted(str(p.relative_to(tmp_path)) for p in e.paths) for e in pkgcache.entries(tmp_path)}
    assert found == {
        "hello-2.0-0": ["file/srv/ch/linux-64/hello-2.0-0", "file/srv/ch/linux-64/hello-2.0-0.conda",
                        "hello-2.0-0", "hello-2.0-0.lock"],
        "tool-1.0-1": ["http/h/linux-64/tool-1.0-1"]}
    assert not (tmp_path / "gone-1-0.lock").exists()


def test_scrubbing_takes_credentials_out_of_micromambas_records(tmp_path: Path) -> None:
    p = package("http://h/ch/linux-64/hello-2.0-0.conda")
    entry = extracted(tmp_path / "http" / "h" / "ch" / "linux-64" / "hello-2.0-0", record=False)
    secret_url = "http://h/t/SECRET/ch/linux-64/hello-2.0-0.conda"
    (entry / "info" / "repodata_record.json").write_text(json.dumps({"url": secret_url}))
    (entry.parent / "urls.txt").write_text(secret_url + "\n")
    assert pkgcache.scrub_credentials(tmp_path, [p]) == 2
    assert "SECRET" not in (entry / "info" / "repodata_record.json").read_text() + (entry.parent / "urls.txt").read_text()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "x.state.json").write_text(json.dumps({"url": "http://bob:SECRET@h/ch/linux-64"}))
    (tmp_path / "cache" / "x.solv").write_bytes(b"\0solv bob:SECRET@h\0")
    (tmp_path / "cache" / "y.solv").write_bytes(b"\0solv clean\0")
    assert pkgcache.scrub_repodata_cache(tmp_path, ["bob:SECRET", "SECRET"]) == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["x.state.json", "y.solv"]
    assert "SECRET" not in (tmp_path / "cache" / "x.state.json").read_text()
