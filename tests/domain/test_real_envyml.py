"""Real environment.yml files from other projects, solved against a real conda-forge subset.

`../shared/data/repodata/conda-forge-py39` holds the real metadata of the `python=3.9` tree (no
archives: solve only). For each real file that parses, the dependencies whose packages exist
there are solved with the real rattler engine. Other dependencies, pins and channels are left
out, because that channel only has part of conda-forge.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from provisiond.config.settings import load_settings
from provisiond.domain.errors import SolveError, SpecError
from provisiond.domain.spec import load_spec
from provisiond.engines.rattler import RattlerEngine
from tests.conftest import SHARED

SUBSET = SHARED / "data" / "repodata" / "conda-forge-py39"
ENVYML = SHARED / "data" / "envyml"


def subset_names() -> set[str]:
    names = set()
    for subdir in ("linux-64", "noarch"):
        data = json.loads((SUBSET / subdir / "repodata.json").read_text())
        names |= {r["name"] for key in ("packages", "packages.conda") for r in data.get(key, {}).values()}
    return names


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> RattlerEngine:
    home = tmp_path_factory.mktemp("real")
    return RattlerEngine(load_settings({"home": str(home), "state": str(home / "state")}, {}, home / "none.toml"))


@pytest.mark.skipif(not SUBSET.is_dir(), reason=f"no conda-forge subset at {SUBSET}")
def test_real_files_solve_where_their_packages_exist(engine: RattlerEngine) -> None:
    import rattler

    names = subset_names()
    solved, unsolvable = [], []
    for path in sorted(p for p in ENVYML.iterdir() if p.suffix in (".yml", ".yaml")):
        try:
            spec = load_spec(path)
        except SpecError:
            continue  # the invalid ones are tested in test_spec.py
        deps = tuple(d for d in spec.dependencies
                     if "::" not in d and rattler.MatchSpec(d, strict=False).name.normalized in names)
        if not deps:
            continue
        local = replace(spec, channels=(SUBSET.as_uri(),), dependencies=deps, pip=())
        try:
            lock = asyncio.run(engine.solve(local))
        except SolveError as exc:  # a pin that this python=3.9 subset cannot meet: a clear error
            assert "cannot be solved" in exc.message
            unsolvable.append(path.name)
            continue
        requested = {rattler.MatchSpec(d, strict=False).name.normalized for d in deps}
        assert requested <= {p.name for p in lock.packages}, path.name
        assert all(p.url.startswith(SUBSET.as_uri()) and p.sha256 for p in lock.packages)
        solved.append(path.name)
    # Most real files ask for python and friends that this subset has.
    assert len(solved) >= 10, (solved, unsolvable)
