"""Confidentiality keys over HTTP: the contract routes, separation of duties at the door
(an admin token cannot decrypt, a workload's token cannot rotate), and dual control of
deletion through the approvals API, on every storage backend."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.api import create_app
from tether.app import Tether
from tether.estate import parse_estate


def _estate() -> dict[str, Any]:
    base = {"owner": "data", "purpose": "p", "justification": "DATA-1", "environment": "prod"}
    return {
        "version": 1,
        "owners": [{"id": "data", "contact": "data@example.com"}],
        "approver_groups": [
            {"id": "key-approvers", "members": ["bob", "carol", "dave"], "threshold": 2}
        ],
        "profiles": [
            {
                "id": "orders-dek-use",
                "provider": "key",
                "target": "orders-dek",
                "scopes": ["encrypt", "decrypt", "rewrap"],
                "max_ttl": "1h",
            }
        ],
        "identities": [
            {
                **base,
                "id": "orders-dek",
                "kind": "encryption_key",
                "data_classification": "confidential",
            },
            {
                **base,
                "id": "orders-api",
                "kind": "service_account",
                "entitlements": [{"profile": "orders-dek-use"}],
            },
        ],
    }


@dataclass
class World:
    client: TestClient
    node: Tether
    tokens: dict[str, str]

    def call(self, who: str, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )


@pytest.fixture
def world(node: Tether) -> Iterator[World]:
    document = _estate()
    node.estate.apply(parse_estate(document), "test", document)
    node.view.reload()
    tokens = {"root": node.root_token}  # type: ignore[attr-defined]
    for name, role in (
        ("alice", "key-admin"),
        ("bob", "key-approver"),
        ("carol", "key-approver"),
        ("dave", "key-approver"),
    ):
        tokens[name], _ = node.tokens.create(name, [role], "test")
    join, _ = node.issuance.create_join_token("orders-api", dt.timedelta(minutes=5), "test")
    tokens["workload"] = node.issuance.start_task(join, "orders", dt.timedelta(hours=1), None).token
    with TestClient(create_app(node), client=("127.0.0.1", 40000)) as client:
        yield World(client, node, tokens)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_create_use_rotate_and_separation_of_duties(world: World) -> None:
    created = world.call(
        "alice",
        "POST",
        "/v1/keys",
        {"name": "orders-dek", "type": "aes256-gcm", "identity": "orders-dek"},
    )
    assert created.status_code == 201, created.text
    assert "material" not in created.text

    plaintext = secrets.token_bytes(1024)
    sealed = world.call(
        "workload",
        "POST",
        "/v1/keys/orders-dek/encrypt",
        {"plaintext": _b64(plaintext), "aad": _b64(b"order-7")},
    )
    assert sealed.status_code == 200, sealed.text
    ciphertext = sealed.json()["ciphertext"]
    assert ciphertext.startswith("tether:v1:")
    opened = world.call(
        "workload",
        "POST",
        "/v1/keys/orders-dek/decrypt",
        {"ciphertext": ciphertext, "aad": _b64(b"order-7")},
    )
    assert base64.b64decode(opened.json()["plaintext"]) == plaintext
    wrong_aad = world.call(
        "workload",
        "POST",
        "/v1/keys/orders-dek/decrypt",
        {"ciphertext": ciphertext, "aad": _b64(b"order-8")},
    )
    assert wrong_aad.status_code == 400

    # An admin token cannot use a key; a workload cannot administer one.
    for admin in ("alice", "root"):
        refused = world.call(
            admin, "POST", "/v1/keys/orders-dek/decrypt", {"ciphertext": ciphertext}
        )
        assert refused.status_code in (401, 403), refused.text
    assert world.call("workload", "POST", "/v1/keys/orders-dek/rotate", {}).status_code == 401

    rotated = world.call("alice", "POST", "/v1/keys/orders-dek/rotate", {})
    assert rotated.status_code == 200, rotated.text
    rewrapped = world.call(
        "workload",
        "POST",
        "/v1/keys/orders-dek/rewrap",
        {"ciphertext": ciphertext, "aad": _b64(b"order-7")},
    )
    assert rewrapped.json()["ciphertext"].startswith("tether:v2:")
    shown = world.call("bob", "GET", "/v1/keys/orders-dek").json()
    assert shown["min_decryption_version"] == 1
    assert len(shown["versions"]) == 2


def test_deleting_a_key_takes_two_distinct_approvers(world: World) -> None:
    world.call(
        "alice",
        "POST",
        "/v1/keys",
        {"name": "orders-dek", "type": "aes256-gcm", "identity": "orders-dek"},
    )
    asked = world.call("alice", "DELETE", "/v1/keys/orders-dek")
    assert asked.status_code == 202, asked.text
    approval = asked.json()["approval"]["id"]

    listed = world.call("bob", "GET", "/v1/approvals", None)
    assert [a["id"] for a in listed.json()["items"]] == [approval]
    assert world.call("alice", "POST", f"/v1/approvals/{approval}/approve", {}).status_code == 403
    first = world.call("bob", "POST", f"/v1/approvals/{approval}/approve", {})
    assert first.status_code == 200, first.text
    assert world.call("bob", "GET", "/v1/keys/orders-dek").json().get("deletion") is None
    again = world.call("bob", "POST", f"/v1/approvals/{approval}/approve", {})
    assert again.status_code in (403, 409)  # one principal counts once
    second = world.call("carol", "POST", f"/v1/approvals/{approval}/approve", {})
    assert second.status_code == 200, second.text
    assert world.call("bob", "GET", "/v1/keys/orders-dek").json()["deletion"] is not None
    assert world.node.verify_audit().ok


def test_sdk_batches_fail_per_item_and_never_print_plaintext(world: World) -> None:
    from tether.client import KeyClient, TetherClient

    world.call(
        "alice",
        "POST",
        "/v1/keys",
        {"name": "orders-dek", "type": "aes256-gcm", "identity": "orders-dek"},
    )
    api = TetherClient(addr="http://testserver", token="")
    api._http = world.client  # the SDK speaks HTTP to the in-process app
    keys = KeyClient(api, world.tokens["workload"])
    secrets_in = [secrets.token_bytes(64) for _ in range(3)]
    sealed = keys.encrypt_batch("orders-dek", [(p, b"row") for p in secrets_in])
    assert all(item.ok for item in sealed)
    ciphertexts = [str(item.value) for item in sealed]
    tampered = ciphertexts[1][:-4] + ("AAAA" if not ciphertexts[1].endswith("AAAA") else "BBBB")
    opened = keys.decrypt_batch(
        "orders-dek", [(ciphertexts[0], b"row"), (tampered, b"row"), (ciphertexts[2], b"row")]
    )
    assert [item.ok for item in opened] == [True, False, True]
    assert opened[0].value == secrets_in[0] and opened[2].value == secrets_in[2]
    assert secrets_in[0].hex() not in repr(opened) and "row" not in repr(opened)
    assert keys.decrypt("orders-dek", keys.encrypt("orders-dek", b"no aad")) == b"no aad"
    # The profile grants encrypt, decrypt and rewrap: a data key is refused by policy.
    from tether.client import ClientError

    with pytest.raises(ClientError):
        keys.datakey("orders-dek", wrapped_only=True)
