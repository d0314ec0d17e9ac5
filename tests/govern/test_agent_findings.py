"""The agent findings (issue #14): an agent without an intent schema, agent runs that
reached beyond their declared intent, live credentials with a long delegation chain, and
a departed person whose `may_act` still names an agent. Each on a node with a real
(SQLite) store: planted, absent on a clean agent, and resolved once fixed."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.clock import SettableClock
from tests.factories import estate_document
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.govern import FindingFilter
from tether.govern._rules import DELEGATION_CHAIN_LONG, INTENT_VIOLATION
from tether.issuance import INTENT_VIOLATION as ISSUANCE_INTENT_VIOLATION
from tether.model import RULES, Lease, LeaseState, Severity, Usage

AGENT_RULES = (
    "agent-intent-undeclared",
    "agent-outside-intent",
    "delegation-chain-long",
    "agent-principal-departed",
)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Tether]:
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}")
    made = Tether(settings, clock=SettableClock())
    made.initialize(1, 1)
    yield made
    made.stop()


def _document() -> dict[str, Any]:
    """Two agents, both declaring their intent: `agent-a` (planted on) and `agent-b`
    (clean, a control); a workload; and an active person `p-ann` who lets agent-a act."""
    doc = estate_document(0)
    base: dict[str, Any] = {
        "owner": "team-a",
        "purpose": "Answers tickets",
        "justification": "CHG-1",
        "environment": "prod",
        "criticality": "medium",
        "approval": {"by": "dana@example.com", "expires": "2027-12-31"},
        "attest": {"issuer": "ci", "claims": {"repository": "acme/agents"}},
        "entitlements": [{"profile": "api-read", "scopes": ["read"]}, {"profile": "db-ro"}],
    }
    schema = {"tools": ["api-read"], "resources": [], "data_classes": []}
    doc["identities"] = [
        {"id": "agent-a", "kind": "agent", "intent_schema": schema, **base},
        {"id": "agent-b", "kind": "agent", "intent_schema": schema, **base},
        {"id": "svc-a", "kind": "workload", **base},
    ]
    doc["people"] = [
        {"id": "p-ann", "issuer": "ci", "subject": "ann", "may_act": ["agent-a", "agent-b"]}
    ]
    return doc


def _apply(node: Tether, doc: dict[str, Any]) -> None:
    node.estate.apply(parse_estate(doc), "test", doc)


def _open(node: Tether, identity_id: str) -> dict[str, dict[str, Any]]:
    """The open agent findings of an identity, by rule (after evaluating everything)."""
    node.govern.evaluate_now()
    found = node.govern.findings(FindingFilter(identity=identity_id, state="open"))
    return {f["rule"]: f for f in found if f["rule"] in AGENT_RULES}


def _resolved(node: Tether, identity_id: str) -> set[str]:
    found = node.govern.findings(FindingFilter(identity=identity_id, state="resolved"))
    return {f["rule"] for f in found}


def _lease(node: Tether, lease_id: str, identity_id: str, chain: tuple[str, ...]) -> None:
    now = node.clock()
    lease = Lease(
        lease_id,
        identity_id,
        "team-a",
        "jwt",
        now - dt.timedelta(minutes=1),
        now + dt.timedelta(minutes=14),
        LeaseState.ACTIVE,
        profile_id="api-read",
        actor=chain[0] if chain else None,
        delegation=chain,
    )
    with node.store.transaction() as tx:
        tx.insert_leases([lease])


def _end(node: Tether, lease_id: str) -> None:
    with node.store.transaction() as tx:
        lease = tx.get_lease(lease_id)
        assert lease is not None
        tx.put_lease(
            replace(
                lease,
                state=LeaseState.EXPIRED,
                ended_at=node.clock(),
                end_reason="expired",
            )
        )


def test_the_agent_rules_are_in_the_catalog_with_their_mappings() -> None:
    assert RULES["agent-intent-undeclared"].severity is Severity.MEDIUM
    assert RULES["agent-outside-intent"].severity is Severity.HIGH
    assert RULES["delegation-chain-long"].severity is Severity.MEDIUM
    assert RULES["agent-principal-departed"].severity is Severity.HIGH
    assert RULES["agent-intent-undeclared"].owasp_nhi == ("NHI5",)
    assert RULES["agent-principal-departed"].owasp_nhi == ("NHI1",)
    assert "PR.AA-05" in RULES["agent-outside-intent"].nist_csf
    assert "DE.CM-09" in RULES["agent-outside-intent"].nist_csf
    assert set(RULES["agent-principal-departed"].nist_csf) == {"PR.AA-01", "GV.RR-02"}
    # Govern names issuance's usage action without importing issuance: the same string.
    assert INTENT_VIOLATION == ISSUANCE_INTENT_VIOLATION


def test_a_clean_estate_has_no_agent_findings(node: Tether) -> None:
    _apply(node, _document())
    for identity_id in ("agent-a", "agent-b", "svc-a"):
        assert _open(node, identity_id) == {}, identity_id


def test_an_agent_without_an_intent_schema_is_found_until_it_declares_one(
    node: Tether,
) -> None:
    doc = _document()
    undeclared = copy.deepcopy(doc)
    del undeclared["identities"][0]["intent_schema"]
    _apply(node, undeclared)
    found = _open(node, "agent-a")
    assert set(found) == {"agent-intent-undeclared"}
    finding = found["agent-intent-undeclared"]
    assert finding["severity"] == "medium"
    assert finding["evidence"]["tools_granted"] == ["api-read", "db-ro"]
    assert "intent_schema" in finding["recommendation"]
    # The control agent declares its intent; a workload is never asked to.
    assert _open(node, "agent-b") == {}
    assert _open(node, "svc-a") == {}

    _apply(node, doc)
    assert _open(node, "agent-a") == {}
    assert "agent-intent-undeclared" in _resolved(node, "agent-a")


def test_runs_refused_tools_outside_their_intent_are_found_and_age_out(
    node: Tether,
) -> None:
    _apply(node, _document())
    now = node.clock()
    for n in range(3):
        node.govern.record(
            Usage("agent-a", now - dt.timedelta(minutes=n), INTENT_VIOLATION, resource="db-ro")
        )
    # Ordinary use of agent-b is not a violation.
    node.govern.record(Usage("agent-b", now, "GET /tickets", resource="https://api.example.com"))
    found = _open(node, "agent-a")
    assert set(found) == {"agent-outside-intent"}
    finding = found["agent-outside-intent"]
    assert finding["severity"] == "high"
    assert finding["evidence"]["refusals"] == 3
    assert finding["evidence"]["tools"] == ["db-ro"]
    assert _open(node, "agent-b") == {}

    # Past the evidence window the refusals no longer describe the agent: resolved.
    assert isinstance(node.clock, SettableClock)
    node.clock.advance(days=31)
    assert _open(node, "agent-a") == {}
    assert "agent-outside-intent" in _resolved(node, "agent-a")


def test_a_live_lease_with_a_long_delegation_chain_is_found_until_it_ends(
    node: Tether,
) -> None:
    _apply(node, _document())
    chain = ("agent-b", "agent-c", "svc-a")
    assert len(chain) == DELEGATION_CHAIN_LONG
    _lease(node, "lse_long", "agent-a", chain)
    _lease(node, "lse_short", "agent-b", ("svc-a", "agent-a"))
    found = _open(node, "agent-a")
    assert set(found) == {"delegation-chain-long"}
    evidence = found["delegation-chain-long"]["evidence"]
    assert evidence["leases"] == ["lse_long"]
    assert evidence["chains"] == {"lse_long": list(chain)}
    assert evidence["threshold"] == DELEGATION_CHAIN_LONG
    # Below the threshold: not long.
    assert _open(node, "agent-b") == {}

    _end(node, "lse_long")
    assert _open(node, "agent-a") == {}
    assert "delegation-chain-long" in _resolved(node, "agent-a")


def test_a_departed_person_still_letting_an_agent_act_is_found_until_cleared(
    node: Tether,
) -> None:
    doc = _document()
    doc["people"].append(
        {
            "id": "p-bob",
            "issuer": "ci",
            "subject": "bob",
            "status": "departed",
            "may_act": ["agent-a"],
        }
    )
    _apply(node, doc)
    found = _open(node, "agent-a")
    assert set(found) == {"agent-principal-departed"}
    finding = found["agent-principal-departed"]
    assert finding["severity"] == "high"
    assert finding["evidence"]["person"] == "p-bob"
    assert "p-bob" in finding["recommendation"]
    # agent-b acts only for p-ann, who is active.
    assert _open(node, "agent-b") == {}

    doc["people"][1]["may_act"] = []
    _apply(node, doc)
    assert _open(node, "agent-a") == {}
    assert "agent-principal-departed" in _resolved(node, "agent-a")
