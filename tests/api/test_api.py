"""The HTTP API through the real ASGI app: authentication, roles, the seal gate, tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import estate_document
from tether._internal.tokens import new_token
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Tether, str, list[str]]]:
    node = Tether(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}"))
    with TestClient(create_app(node)) as client:
        init = client.post("/v1/sys/init", json={"shares": 5, "threshold": 3}).json()
        assert client.get("/v1/sys/status").json()["sealed"] is True
        for share in init["shares"][:3]:
            client.post("/v1/sys/unseal", json={"share": share})
        yield client, node, init["root_token"], init["shares"]
    node.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_discovery_health_and_status_need_no_token(
    api: tuple[TestClient, Tether, str, list[str]],
) -> None:
    client, *_ = api
    assert client.get("/v1/sys/health").json()["status"] == "ok"
    assert client.get("/v1/sys/status").json()["initialized"] is True
    spec = client.get("/openapi.json").json()
    assert "/v1/estate/apply" in spec["paths"] and "/v1/identities" in spec["paths"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/identities",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/tokens",
        "/metrics",
        "/v1/estate/schema",
    ],
)
def test_everything_else_needs_a_valid_token(
    api: tuple[TestClient, Tether, str, list[str]], path: str
) -> None:
    client, *_ = api
    assert client.get(path).status_code == 401
    assert client.get(path, headers=_auth("not-a-token")).status_code == 401
    unknown = client.get(path, headers=_auth(new_token()))
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "unauthenticated"
    assert unknown.headers["www-authenticate"] == "Bearer"


def test_a_token_with_a_broken_checksum_is_refused_before_lookup(
    api: tuple[TestClient, Tether, str, list[str]],
) -> None:
    client, _, root, _ = api
    tampered = root[:-1] + ("A" if root[-1] != "A" else "B")
    response = client.get("/v1/identities", headers=_auth(tampered))
    assert response.status_code == 401
    assert "checksum" in response.json()["message"]


def test_sealed_answers_503_to_all_but_health_status_and_unseal(
    api: tuple[TestClient, Tether, str, list[str]],
) -> None:
    client, _, root, shares = api
    assert client.post("/v1/sys/seal", headers=_auth(root)).json()["sealed"] is True
    assert client.get("/v1/identities", headers=_auth(root)).status_code == 503
    assert client.post("/v1/sys/seal", headers=_auth(root)).status_code == 503
    assert client.get("/v1/sys/health").status_code == 200
    progress = [client.post("/v1/sys/unseal", json={"share": s}).json() for s in shares[:3]]
    assert [p["sealed"] for p in progress] == [True, True, False]
    assert [p["progress"] for p in progress[:2]] == [1, 2]
    assert client.get("/v1/identities", headers=_auth(root)).status_code == 200


def test_init_twice_is_a_conflict(api: tuple[TestClient, Tether, str, list[str]]) -> None:
    client, *_ = api
    response = client.post("/v1/sys/init", json={"shares": 1, "threshold": 1})
    assert response.status_code == 409


def test_roles_limit_what_a_token_can_do(api: tuple[TestClient, Tether, str, list[str]]) -> None:
    client, _, root, _ = api
    assert (
        client.post("/v1/estate/apply", json=estate_document(10), headers=_auth(root)).status_code
        == 200
    )

    def token(*roles: str) -> str:
        created = client.post(
            "/v1/tokens", json={"name": "t", "roles": list(roles)}, headers=_auth(root)
        )
        assert created.status_code == 201, created.text
        return str(created.json()["token"])

    auditor, owner = token("auditor"), token("owner:team-b")
    assert client.get("/v1/audit/verify", headers=_auth(auditor)).json()["ok"] is True
    assert client.get("/v1/identities", headers=_auth(auditor)).json()["items"]
    assert (
        client.post(
            "/v1/estate/apply", json=estate_document(10), headers=_auth(auditor)
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/v1/tokens", json={"name": "x", "roles": ["admin"]}, headers=_auth(auditor)
        ).status_code
        == 403
    )
    assert client.post("/v1/sys/seal", headers=_auth(auditor)).status_code == 403

    mine = client.get("/v1/identities", headers=_auth(owner)).json()["items"]
    assert mine and {i["owner"] for i in mine} == {"team-b"}
    assert client.get("/v1/identities/nhi-00001", headers=_auth(owner)).status_code == 200
    # Another owner's identity is indistinguishable from a missing one.
    assert client.get("/v1/identities/nhi-00000", headers=_auth(owner)).status_code == 404
    assert client.get("/v1/audit", headers=_auth(owner)).status_code == 403


def test_tokens_are_shown_once_and_revocable(
    api: tuple[TestClient, Tether, str, list[str]],
) -> None:
    client, _, root, _ = api
    created = client.post(
        "/v1/tokens", json={"name": "ci", "roles": ["auditor"], "ttl": "1h"}, headers=_auth(root)
    ).json()
    listed = client.get("/v1/tokens", headers=_auth(root)).text
    assert created["token"] not in listed and "token_hash" not in listed
    assert client.get("/v1/audit", headers=_auth(created["token"])).status_code == 200
    assert client.delete(f"/v1/tokens/{created['id']}", headers=_auth(root)).status_code == 204
    assert client.get("/v1/audit", headers=_auth(created["token"])).status_code == 401
    assert client.delete(f"/v1/tokens/{created['id']}", headers=_auth(root)).status_code == 404


def test_bad_roles_and_ttl_name_the_field(api: tuple[TestClient, Tether, str, list[str]]) -> None:
    client, _, root, _ = api
    bad_role = client.post(
        "/v1/tokens", json={"name": "x", "roles": ["admin", "root"]}, headers=_auth(root)
    )
    assert bad_role.status_code == 422 and "roles[1]" in bad_role.json()["message"]
    bad_ttl = client.post(
        "/v1/tokens", json={"name": "x", "roles": ["admin"], "ttl": "forever"}, headers=_auth(root)
    )
    assert bad_ttl.status_code == 422 and "ttl" in bad_ttl.json()["message"]


def test_rotation_adds_a_term(api: tuple[TestClient, Tether, str, list[str]]) -> None:
    client, node, root, _ = api
    with node.store.transaction() as tx:
        node.barrier.put_secret(tx, "secret/a", "static", b"generated-" + new_token().encode())
    assert client.post("/v1/sys/rotate", headers=_auth(root)).json() == {"term": 2}
    assert client.get("/v1/sys/status").json()["term"] == 2
    while node.barrier.rewrap():
        pass
    with node.store.read() as tx:
        record = tx.get_sealed("secret/a")
        assert record is not None and record.term == 2
        assert node.barrier.get_secret(tx, "secret/a") is not None


def test_metrics_are_prometheus_text(api: tuple[TestClient, Tether, str, list[str]]) -> None:
    client, _, root, _ = api
    client.get("/v1/identities", headers=_auth(root))
    response = client.get("/metrics", headers=_auth(root))
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'tether_http_requests_total{method="GET",route="/v1/identities",status="200"}'
        in response.text
    )
    assert "tether_sealed 0.0" in response.text


def test_audit_export_verifies_offline(
    api: tuple[TestClient, Tether, str, list[str]], tmp_path: Path
) -> None:
    from tether.audit import read_jsonl, verify_chain

    client, _, root, _ = api
    client.post("/v1/estate/apply", json=estate_document(5), headers=_auth(root))
    export = client.get("/v1/audit/export", headers=_auth(root)).text
    result = verify_chain(read_jsonl(export.splitlines()))
    assert (
        result.ok
        and result.entries == client.get("/v1/audit/verify", headers=_auth(root)).json()["entries"]
    )
