"""The OpenAPI document: valid OpenAPI 3.1, served as it is shipped, and true to the app's routes."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate

from provisiond.config.settings import load_settings
from provisiond.daemon.api.app import make_app
from provisiond.daemon.api.routes import OPENAPI
from provisiond.daemon.provisioner import Provisioner
from provisiond.engines.choose import engine_for
from provisiond.store.store import Store
from tests.conftest import REPO, Daemon

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def documented() -> set[tuple[str, str]]:
    paths = json.loads(OPENAPI.read_text())["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item if method in METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    document = json.loads(OPENAPI.read_text())
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_docs_hold_the_same_document() -> None:
    assert (REPO / "docs" / "openapi.json").read_text() == OPENAPI.read_text(), \
        "docs/openapi.json differs: cp provisiond/daemon/api/openapi.json docs/openapi.json"


async def test_every_route_of_the_app_is_documented_and_nothing_else(tmp_path: Path) -> None:
    settings = load_settings({"home": str(tmp_path / "home"), "socket": str(tmp_path / "s.sock"),
                              "state": str(tmp_path / "state")}, {}, tmp_path / "none.toml")
    with Store.open(settings.paths) as store:
        provisioner = Provisioner(store, engine_for(settings, {}), settings)
        try:
            app = make_app(provisioner, {})
            # aiohttp adds HEAD beside each GET by itself.
            routed = {(r.method, r.resource.canonical) for r in app.router.routes()
                      if r.method != "HEAD" and r.resource is not None}
        finally:
            await provisioner.close()
    assert routed - documented() == set(), "routes missing from provisiond/daemon/api/openapi.json"
    assert documented() - routed == set(), "documented routes the app does not have"


def test_the_daemon_serves_the_document(daemon: Daemon) -> None:
    assert daemon.client.get("/v1/openapi.json") == json.loads(OPENAPI.read_text())
