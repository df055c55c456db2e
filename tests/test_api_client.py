"""A REST client generated from the live server's OpenAPI document (openapi-python-client,
the generator Python users reach for) covers every operation without a warning, and
works: checks are created, read, changed, listed and deleted through it, with typed
answers."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers import Server
from tocsin.api import openapi

PACKAGE = "tocsin_client"
# Enum values such as GMT0, GMT+0 and GMT-0 (time zones) would map to one Python name;
# literal enums keep each value as it is.
# Documents that are not JSON or text (SVG badges, the Atom feed, a report's document in
# the format it was asked for) are bytes to the client.
CONFIG = """literal_enums: true
content_type_overrides:
  image/svg+xml: application/octet-stream
  application/atom+xml: application/octet-stream
  "*/*": application/octet-stream
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("client") / "data")
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def generated(live: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    out = tmp_path_factory.mktemp("generated")
    doc = requests.get(f"{live.base}/api/openapi.json", timeout=10).json()
    (out / "openapi.json").write_text(json.dumps(doc))
    (out / "config.yaml").write_text(CONFIG)
    # The generator formats its output with ruff: the one in this environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        [
            Path(sys.executable).parent / "openapi-python-client",
            "generate",
            "--path",
            out / "openapi.json",
            "--output-path",
            out / PACKAGE,
            "--meta",
            "none",
            "--config",
            out / "config.yaml",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "warning" not in report.lower(), report
    sys.path.insert(0, str(out))
    try:
        yield (doc, importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def endpoint(client_pkg: Any, method: str, path: str) -> Any:
    """The generated module of an operation (named after its operationId)."""
    return importlib.import_module(f"{PACKAGE}.api.default.{openapi.operation_id(method, path)}")


def test_every_operation_is_generated(generated: Any) -> None:
    doc, pkg = generated
    for path, item in doc["paths"].items():
        for method in item:
            if method == "parameters":
                continue
            module = endpoint(pkg, method, path)
            assert hasattr(module, "sync_detailed"), (method, path)


def test_checks_through_the_generated_client(live: Server, generated: Any) -> None:
    doc, pkg = generated
    with pkg.AuthenticatedClient(base_url=live.base, token=live.token) as client:
        _crud(doc, pkg, client)


def _crud(doc: dict[str, Any], pkg: Any, client: Any) -> None:
    create = endpoint(pkg, "post", "/api/checks")
    ref = doc["paths"]["/api/checks"]["post"]["requestBody"]["content"]["application/json"]
    body = getattr(
        importlib.import_module(f"{PACKAGE}.models"), ref["schema"]["$ref"].split("/")[-1]
    )
    made = create.sync_detailed(
        client=client,
        body=body.from_dict({"name": "generated", "url": "http://127.0.0.1:9/", "interval": 30}),
    )
    assert made.status_code == 200, made.content
    check = made.parsed
    assert check.name == "generated" and check.interval == 30
    read = endpoint(pkg, "get", "/api/checks/{check_id}").sync_detailed(
        client=client, check_id=check.id
    )
    assert read.status_code == 200 and read.parsed.id == check.id
    assert read.parsed.url == "http://127.0.0.1:9/"
    listed = endpoint(pkg, "get", "/api/checks").sync_detailed(client=client, limit=10)
    assert listed.status_code == 200 and check.id in [c.id for c in listed.parsed]
    deleted = endpoint(pkg, "delete", "/api/checks/{check_id}").sync_detailed(
        client=client, check_id=check.id
    )
    assert deleted.status_code == 204
    gone = endpoint(pkg, "get", "/api/checks/{check_id}").sync_detailed(
        client=client, check_id=check.id
    )
    assert gone.status_code == 404
