"""Confidentiality keys under governance, on a real node (SQLite, the real key service,
the real engine): a key's findings are its encryption_key identity's findings (opened,
resolved, mapped, audited, scored), a principal both administering and using keys is an
unowned finding settled by the full pass, the evidence report lists the keys, and the
inventory shows an encryption_key identity's keys. Never any material."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_keys_api import _estate as keys_api_estate
from tests.clock import SettableClock
from tests.keys.conftest import holder_keys
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.govern import FindingFilter, finding_id
from tether.govern._html import render_report_html
from tether.keys import Approver, KeyAdmin, KeyUser
from tether.model import RULES

ADMIN = KeyAdmin("alice")
USER = KeyUser("orders-api-run", "orders-api", attested=True)


def _estate() -> dict[str, Any]:
    """The keys API tests' estate (orders-dek, and orders-api entitled to it), with a
    30d maximum age for confidential data, escrow holders, and an owner using no key."""
    holders, _ = holder_keys()
    document = keys_api_estate()
    document["owners"].append({"id": "web", "contact": "web@example.com"})
    document["crypto_policy"] = {"max_age": {"confidential": "30d"}}
    document["escrow_holders"] = [
        {"id": name, "recipient": holders[name].recipient} for name in ("h1", "h2", "h3")
    ]
    web = {**document["identities"][1], "id": "web-api", "owner": "web", "entitlements": []}
    document["identities"].append(web)
    return document


@dataclass
class World:
    node: Tether
    clock: SettableClock
    client: TestClient
    root: str

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {self.root}"}
        )
        assert response.is_success, response.text
        return response.json()

    def findings(self, **where: Any) -> list[dict[str, Any]]:
        return self.node.govern.findings(FindingFilter(**where))

    def rules(self, identity_id: str, state: str = "open") -> set[str]:
        return {f["rule"] for f in self.findings(identity=identity_id, state=state)}

    def audit(self, prefix: str) -> list[Any]:
        with self.node.store.read() as tx:
            return tx.list_audit(0, 100_000, action_prefix=prefix)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = SettableClock()
    node = Tether(
        Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}"), clock=clock
    )
    root = node.initialize(1, 1).root_token
    document = _estate()
    node.estate.apply(parse_estate(document), "test", document)
    node.view.reload()
    try:
        with TestClient(create_app(node)) as client:
            yield World(node, clock, client, root)
    finally:
        node.stop()


def test_an_overdue_key_is_its_identitys_finding_until_rotated_rewrapped_and_retired(
    world: World,
) -> None:
    node = world.node
    node.keys.create(ADMIN, "orders-dek", "aes256-gcm", "orders-dek")
    old = node.keys.encrypt(USER, "orders-dek", b"row 1")
    node.govern.evaluate_now()
    assert world.rules("orders-dek") == set()

    world.clock.advance(days=31)  # past the 30d max_age of confidential data
    node.govern.evaluate_now()
    (overdue,) = world.findings(identity="orders-dek", state="open")
    rule = RULES["key-rekey-overdue"]
    assert overdue["rule"] == "key-rekey-overdue" and overdue["subject"] == "key:orders-dek"
    assert overdue["owasp_nhi"] == list(rule.owasp_nhi) == ["NHI7"]
    assert overdue["nist_csf"] == ["PR.DS-01", "ID.AM-08"]
    assert overdue["severity"] == "high" and overdue["owner"] == "data"
    assert overdue["evidence"]["reasons"] == ["max-age"]
    assert overdue["id"] == finding_id("key-rekey-overdue", "orders-dek", "key:orders-dek")
    # Over HTTP, as any finding, and in the identity's risk.
    listed = world.get("/v1/findings", identity="orders-dek", state="open")["items"]
    assert [f["rule"] for f in listed] == ["key-rekey-overdue"]
    assert listed[0]["owasp_nhi"] == ["NHI7"]
    assert world.get("/v1/identities/orders-dek")["risk"]["score"] > 0
    opened = [e for e in world.audit("finding.open") if e.identity_id == "orders-dek"]
    assert [json.loads(e.details)["rule"] for e in opened] == ["key-rekey-overdue"]
    node.govern.evaluate_now()  # evaluating again changes nothing
    assert len([e for e in world.audit("finding.") if e.identity_id == "orders-dek"]) == 1

    # The policy's rotation: no longer overdue, but version 1 still decrypts.
    assert node.keys.rotate_due() == [("orders-dek", ("max-age",))]
    node.govern.evaluate_now()
    assert world.rules("orders-dek") == {"key-old-version-decryptable"}
    assert world.rules("orders-dek", "resolved") == {"key-rekey-overdue"}

    rewrapped = node.keys.rewrap(USER, "orders-dek", old)
    assert rewrapped.startswith("tether:v2:")
    node.govern.evaluate_now()
    assert world.rules("orders-dek") == {"key-old-version-decryptable"}  # until raised
    node.keys.configure(ADMIN, "orders-dek", {"min_decryption_version": 2})
    node.govern.evaluate_now()
    assert world.rules("orders-dek") == set()
    assert world.rules("orders-dek", "resolved") == {
        "key-rekey-overdue",
        "key-old-version-decryptable",
    }
    resolved = [e for e in world.audit("finding.resolve") if e.identity_id == "orders-dek"]
    assert len(resolved) == 2
    assert world.get("/v1/identities/orders-dek")["risk"]["score"] == 0
    assert node.keys.decrypt(USER, "orders-dek", rewrapped) == b"row 1"
    assert node.verify_audit().ok


def test_a_key_admin_who_owns_key_using_identities_is_a_conflict_until_revoked(
    world: World,
) -> None:
    node = world.node
    tokens = node.tokens
    tokens.create("alice", ["key-admin"], "test")  # administers only
    tokens.create("wendy", ["key-admin", "owner:web"], "test")  # web uses no key
    tokens.create("olga", ["owner:data"], "test")  # uses only
    _, dana = tokens.create("dana", ["key-admin", "owner:data"], "test")
    _, data = tokens.create("data", ["key-admin"], "test")  # is the owner itself
    node.govern.evaluate_now()
    conflicts = world.findings(rule="key-role-conflict", state="open")
    assert [f["subject"] for f in conflicts] == sorted(
        ["principal:dana", "principal:data"],
        key=lambda s: finding_id("key-role-conflict", "", s),
    )
    (found,) = [f for f in conflicts if f["subject"] == "principal:dana"]
    assert found["identity"] is None and found["owner"] is None
    assert found["owasp_nhi"] == ["NHI5"] and found["nist_csf"] == ["GV.RR-02", "PR.AA-05"]
    assert found["evidence"]["roles"] == ["key-admin", "owner:data"]
    assert found["evidence"]["key_admin_tokens"] == [dana.id]
    assert found["evidence"]["key_using_identities"] == ["orders-api"]
    opened = [e for e in world.audit("finding.open") if "key-role-conflict" in e.details]
    assert sorted(json.loads(e.details)["subject"] for e in opened) == [
        "principal:dana",
        "principal:data",
    ]
    assert {(e.result, e.actor, e.identity_id) for e in opened} == {
        ("alert", "system:govern", None)
    }

    node.govern.evaluate_now()  # standing: not opened again
    assert len([e for e in world.audit("finding.open") if "key-role" in e.details]) == 2

    tokens.revoke(dana.id, "test")
    node.govern.evaluate_now()
    assert [f["subject"] for f in world.findings(rule="key-role-conflict", state="open")] == [
        "principal:data"
    ]
    (gone,) = world.findings(rule="key-role-conflict", state="resolved")
    assert gone["subject"] == "principal:dana"
    resolved = [json.loads(e.details) for e in world.audit("finding.resolve")]
    assert [d["subject"] for d in resolved] == ["principal:dana"]

    # An expired token is not live either; the conflict comes back with a new token.
    tokens.revoke(data.id, "test")
    tokens.create("dana", ["key-admin", "owner:data"], "test", ttl=dt.timedelta(hours=1))
    node.govern.evaluate_now()
    assert [f["subject"] for f in world.findings(rule="key-role-conflict", state="open")] == [
        "principal:dana"
    ]
    assert world.findings(rule="key-role-conflict", state="open")[0].get("reopened_at")
    world.clock.advance(hours=2)
    node.govern.evaluate_now()
    assert world.findings(rule="key-role-conflict", state="open") == []


def test_the_evidence_report_lists_keys_with_their_rotations_and_approvals(
    world: World,
) -> None:
    node = world.node
    node.keys.create(ADMIN, "orders-dek", "aes256-gcm", "orders-dek")
    node.keys.create(
        ADMIN,
        "orders-sig",
        "ed25519",
        "orders-dek",
        {"escrow": {"holders": ["h1", "h2", "h3"], "threshold": 2}},
    )
    node.keys.rotate(ADMIN, "orders-dek", "quarterly")
    changed = node.keys.configure(ADMIN, "orders-dek", {"usage_limit": 1000})
    (request,) = changed.approvals
    node.keys.approve(Approver("bob"), request.id)
    node.keys.approve(Approver("carol"), request.id)
    world.clock.advance(days=31)
    node.govern.evaluate_now()

    report = node.govern.report("owasp-nhi", world.clock() - dt.timedelta(days=90))
    section = report["keys"]
    assert section["total"] == 2 and section["escrowed"] == 1
    dek, sig = section["items"]
    assert dek["name"] == "orders-dek" and dek["type"] == "aes256-gcm"
    assert dek["identity"] == "orders-dek" and dek["identity_in_estate"] is True
    assert dek["latest_version"] == 2
    assert (dek["min_decryption_version"], dek["min_encryption_version"]) == (1, 0)
    assert dek["escrowed"] is False and dek["escrow_threshold"] is None
    assert dek["rotations"]["count"] == 1
    approvals = dek["approvals"]
    assert (approvals["requested"], approvals["approved"], approvals["executed"]) == (1, 2, 1)
    assert approvals["denied"] == 0
    rotation = [e for e in world.audit("key.rotate") if '"orders-dek"' in e.details]
    assert dek["rotations"]["audit_entries"] == [e.seq for e in rotation]
    assert len(approvals["audit_entries"]) == 4
    # Both keys are due (31 days past a 30d maximum age): open findings of their identity.
    assert dek["open_findings"] == 1 and sig["open_findings"] == 1
    assert section["open_findings"] == 2
    assert sig["escrowed"] is True
    assert (sig["escrow_threshold"], sig["escrow_holders"]) == (2, 3)
    assert sig["rotations"]["count"] == 0
    # Metadata only: no version's check value or public key, let alone material.
    text = json.dumps(section)
    info = node.keys.get(ADMIN, "orders-sig")
    assert info.versions[0].kcv not in text
    assert "public_key" not in text and "material" not in text
    assert "key-rekey-overdue" in {r["rule"] for r in report["findings"]["by_rule"]}

    html = render_report_html(report)
    assert '<h2 id="keys">Confidentiality keys</h2>' in html
    assert "<th>orders-sig</th>" in html and "2 of 3" in html
    assert "requested 1, approved 2, executed 1" in html
    assert 'id="more"' not in html  # the keys section is rendered, not dumped


def test_the_inventory_shows_an_encryption_key_identitys_keys(world: World) -> None:
    node = world.node
    node.keys.create(ADMIN, "orders-dek", "aes256-gcm", "orders-dek")
    node.keys.rotate(ADMIN, "orders-dek")
    shown = world.get("/v1/identities/orders-dek")
    assert shown["keys"] == [
        {"name": "orders-dek", "type": "aes256-gcm", "latest_version": 2, "escrowed": False}
    ]
    assert "keys" not in world.get("/v1/identities/orders-api")
    listed = world.get("/v1/identities")["items"]
    by_id = {i["id"]: i for i in listed}
    assert [k["name"] for k in by_id["orders-dek"]["keys"]] == ["orders-dek"]
    assert "keys" not in by_id["orders-api"]
    riskiest = world.get("/v1/identities", kind="encryption_key", sort="risk")["items"]
    assert all(i["keys"] == shown["keys"] for i in riskiest)
