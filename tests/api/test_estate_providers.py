"""`POST /v1/estate/apply` refuses a profile whose provider Tether does not implement yet,
naming the field and what is supported, and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import estate_document
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    node = Tether(Settings(home=tmp_path, database_url="memory://"))
    with TestClient(create_app(node)) as http:
        init = http.post("/v1/sys/init", json={"shares": 1, "threshold": 1}).json()
        http.post("/v1/sys/unseal", json={"share": init["shares"][0]})
        yield http, {"Authorization": f"Bearer {init['root_token']}"}
    node.stop()


@pytest.mark.parametrize("provider", ["static"])
def test_apply_refuses_a_provider_not_implemented_yet(
    client: tuple[TestClient, dict[str, str]], provider: str
) -> None:
    http, admin = client
    doc = estate_document(2)
    doc["profiles"].append({"id": "later", "provider": provider, "max_ttl": "1h"})
    refused = http.post("/v1/estate/apply", json=doc, headers=admin)
    assert refused.status_code == 422, refused.text
    assert refused.json()["problems"] == [
        {
            "path": f"profiles[{len(doc['profiles']) - 1}].provider",
            "message": f"{provider!r} is not implemented yet"
            " (supported: jwt, token, x509-svid, jwt-svid, key, postgres, redis)",
        }
    ]
    assert http.get("/v1/identities", headers=admin).json()["items"] == []


def test_the_served_schema_offers_only_implemented_providers(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    http, admin = client
    schema = http.get("/v1/estate/schema", headers=admin).json()
    provider = schema["properties"]["profiles"]["items"]["properties"]["provider"]
    assert provider["enum"] == ["jwt", "token", "x509-svid", "jwt-svid", "key", "postgres", "redis"]
