"""The decision point in-process: decisions with reasons, properties as attributes,
boxcarred semantics, the role to application rule, searches paged with opaque tokens,
Tether's own application, and decisions summarized in the audit log."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.authzen.world import apply, records_document
from tests.clock import SettableClock
from tests.factories import estate_document
from tether.app import Tether
from tether.authzen import (
    AUDIT_ACTION,
    DENY_ON_FIRST_DENY,
    PERMIT_ON_FIRST_PERMIT,
    Action,
    BadEvaluationRequest,
    Evaluation,
    Party,
    PdpForbidden,
    Search,
    failed,
)
from tether.config import Settings
from tether.estate import parse_estate

ACTOR = "token:test(pep)"


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def pdp_node(tmp_path: Path, clock: SettableClock) -> Iterator[Tether]:
    node = Tether(Settings(home=tmp_path, database_url="memory://"), clock=clock)
    node.initialize(shares=1, threshold=1)
    apply(node, records_document())
    yield node
    node.stop()


def _ev(
    user: str,
    action: str,
    record: str,
    subject: dict[str, Any] | None = None,
    resource: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Evaluation:
    return Evaluation(
        Party("User", user, subject or {}),
        Action(action),
        Party("Record", record, resource or {}),
        context or {},
    )


def _decide(node: Tether, *evaluations: Evaluation) -> list[bool]:
    return [v.decision for v in node.pdp.evaluate_batch("records", evaluations, ACTOR)]


def test_owners_admins_and_viewers(pdp_node: Tether) -> None:
    assert _decide(
        pdp_node,
        _ev("bob", "read", "r1"),  # owner
        _ev("bob", "edit", "r1"),  # owner
        _ev("bob", "read", "r2"),  # dave's
        _ev("carol", "read", "r2"),  # viewer
        _ev("carol", "edit", "r2"),  # viewer: read only
        _ev("alice", "delete", "r2"),  # admin
        _ev("bob", "delete", "r1"),  # owners do not delete
    ) == [True, True, False, True, False, True, False]


def test_a_decision_says_which_policy_decided_and_why(pdp_node: Tether) -> None:
    permit = pdp_node.pdp.evaluate("records", _ev("bob", "read", "r1"), ACTOR)
    assert permit.policy_ids == ("policies/records.cedar#owners",)
    assert permit.to_json()["context"]["reason_admin"]["reasons"] == [
        "permitted by policies/records.cedar#owners: owners may read and edit their own records"
    ]
    forbid = pdp_node.pdp.evaluate("records", _ev("bob", "edit", "r3"), ACTOR)
    assert not forbid.decision
    assert forbid.policy_ids == ("policies/records.cedar#no-archived-edits",)
    nothing = pdp_node.pdp.evaluate("records", _ev("bob", "read", "r2"), ACTOR)
    assert nothing.to_json() == {
        "decision": False,
        "context": {"reason_admin": {"reasons": ["no policy permits this request"]}},
    }


def test_properties_are_attributes_and_declared_ones_win(pdp_node: Tether) -> None:
    bob = {"__entity": {"type": "User", "id": "bob"}}
    # An undeclared record exists with the properties given.
    assert _decide(pdp_node, _ev("bob", "read", "r9", resource={"owner": bob})) == [True]
    assert _decide(pdp_node, _ev("bob", "read", "r9")) == [False]
    # Archived by a property: the forbid reads it.
    assert _decide(pdp_node, _ev("bob", "edit", "r1", resource={"archived": True})) == [False]
    # r2 is declared as dave's: a property cannot make bob its owner.
    assert _decide(pdp_node, _ev("bob", "read", "r2", resource={"owner": bob})) == [False]
    # A value Cedar cannot take denies, naming the field.
    verdict = pdp_node.pdp.evaluate("records", _ev("bob", "read", "r1", context={"x": 1.5}), ACTOR)
    assert not verdict.decision
    assert "context.x" in verdict.reasons[0]


def test_a_forbid_that_fails_to_evaluate_denies(tmp_path: Path, pdp_node: Tether) -> None:
    document = records_document()
    app = document["applications"][0]
    app["policies"] = [
        {"id": "open.cedar", "source": "permit (principal, action, resource);"},
        {
            "id": "frozen.cedar",
            "source": "forbid (principal, action, resource) when { resource.frozen };",
        },
    ]
    apply(pdp_node, document)
    verdict = pdp_node.pdp.evaluate("records", _ev("bob", "read", "r1"), ACTOR)
    assert not verdict.decision  # r1 has no `frozen`: Cedar skips the forbid; we do not
    assert verdict.policy_ids == ("frozen.cedar",)
    assert _decide(pdp_node, _ev("bob", "read", "r1", resource={"frozen": False})) == [True]


def test_batch_semantics(pdp_node: Tether) -> None:
    items = [_ev("bob", "read", "r1"), _ev("bob", "read", "r2"), _ev("bob", "read", "r3")]
    pdp = pdp_node.pdp
    assert [v.decision for v in pdp.evaluate_batch("records", items, ACTOR)] == [True, False, True]
    first_deny = pdp.evaluate_batch("records", items, ACTOR, DENY_ON_FIRST_DENY)
    assert [v.decision for v in first_deny] == [True, False]
    first_permit = pdp.evaluate_batch("records", items, ACTOR, PERMIT_ON_FIRST_PERMIT)
    assert [v.decision for v in first_permit] == [True]
    bad = failed(400, "evaluations[0].action: is required")
    mixed = pdp.evaluate_batch("records", [bad, items[0]], ACTOR)
    assert [v.decision for v in mixed] == [False, True]
    assert mixed[0].to_json()["context"]["error"]["status"] == 400
    with pytest.raises(BadEvaluationRequest, match="evaluations_semantic"):
        pdp.evaluate_batch("records", items, ACTOR, "whatever")


def test_which_application_a_role_reaches(pdp_node: Tether) -> None:
    pdp = pdp_node.pdp
    assert pdp.application_for(["pdp:records"]) == "records"
    assert pdp.application_for(["pdp"]) == "records"  # the one declared
    assert pdp.application_for(["pdp:tether"]) == "tether"
    with pytest.raises(PdpForbidden, match="no application 'billing'"):
        pdp.application_for(["pdp:billing"])
    with pytest.raises(PdpForbidden, match="several applications"):
        pdp.application_for(["pdp:records", "pdp:tether"])
    with pytest.raises(PdpForbidden, match="role pdp or pdp:<application>"):
        pdp.application_for(["admin"])
    document = records_document()
    second = copy.deepcopy(document["applications"][0])
    second.update(id="archive", namespace="Archive", policies=[], entities=[])
    document["applications"].append(second)
    apply(pdp_node, document)
    with pytest.raises(
        PdpForbidden, match=r"2 applications \(archive, records\).*pdp:<application>"
    ):
        pdp.application_for(["pdp"])
    apply(pdp_node, {"version": 1})
    with pytest.raises(PdpForbidden, match="pdp:tether"):
        pdp.application_for(["pdp"])


def _search(node: Tether, search: Search) -> tuple[list[str], str]:
    page = node.pdp.search("records", search, ACTOR)
    return list(page.results), page.next_token


def test_searches(pdp_node: Tether) -> None:
    r1, read = Party("Record", "r1"), Action("read")
    subjects = Search("subject", Party("User", ""), r1, read)
    assert _search(pdp_node, subjects) == (["alice", "bob", "carol"], "")
    resources = Search("resource", Party("User", "bob"), Party("Record", ""), read)
    assert _search(pdp_node, resources) == (["r1", "r3"], "")
    actions = Search("action", Party("User", "bob"), r1)
    assert _search(pdp_node, actions) == (["edit", "read"], "")
    # Only entities of the type searched for (a group is in itself, so admins may read),
    # and none of an unknown type.
    assert _search(pdp_node, Search("subject", Party("Group", ""), r1, read)) == (
        ["admins", "viewers"],
        "",
    )
    assert _search(pdp_node, Search("subject", Party("Nope", ""), r1, read)) == ([], "")


def test_search_pages_with_opaque_tokens(pdp_node: Tether) -> None:
    base = Search("subject", Party("User", ""), Party("Record", "r1"), Action("read"), limit=1)
    seen: list[str] = []
    token: str | None = None
    for _ in range(5):
        results, token = _search(pdp_node, dataclasses.replace(base, token=token))
        seen += results
        if not token:
            break
    assert seen == ["alice", "bob", "carol"]
    _, first = _search(pdp_node, base)
    other = Search(
        "subject", Party("User", ""), Party("Record", "r2"), Action("read"), token=first, limit=1
    )
    with pytest.raises(BadEvaluationRequest, match="another query"):
        pdp_node.pdp.search("records", other, ACTOR)
    with pytest.raises(BadEvaluationRequest, match="not a token"):
        pdp_node.pdp.search("records", dataclasses.replace(base, token="%%%"), ACTOR)


def _entries(node: Tether) -> list[Any]:
    return [e for e in node.store.iter_audit() if e.action == AUDIT_ACTION]


def test_decisions_are_summarized_not_chained_one_by_one(
    pdp_node: Tether, clock: SettableClock
) -> None:
    with pdp_node.store.read() as tx:
        head = tx.audit_head()[0]
    for _ in range(50):
        _decide(pdp_node, _ev("bob", "read", "r1"), _ev("bob", "read", "r2"))
    pdp_node.pdp.search(
        "records", Search("action", Party("User", "bob"), Party("Record", "r1")), ACTOR
    )
    with pdp_node.store.read() as tx:
        assert tx.audit_head()[0] == head  # no entry per decision
    assert pdp_node.pdp.flush_audit() == 0  # the window (1m) is not over
    clock.advance(seconds=61)
    assert pdp_node.pdp.flush_audit() == 1
    (entry,) = _entries(pdp_node)
    details = json.loads(entry.details)
    assert entry.actor == ACTOR
    assert details["application"] == "records"
    assert (details["decisions"], details["permits"], details["denies"]) == (100, 50, 50)
    assert details["by_action"] == {"read": {"permit": 50, "deny": 50}}
    assert details["searches"] == {"action": 1}
    assert len(details["deny_samples"]) == 5  # audit.deny_samples
    assert details["deny_samples"][0] == {
        "subject": {"type": "User", "id": "bob"},
        "action": "read",
        "resource": {"type": "Record", "id": "r2"},
        "reason": "no policy permits this request",
    }
    assert "permit_samples" not in details
    assert pdp_node.verify_audit().ok


def test_properties_and_context_never_reach_the_audit_log(pdp_node: Tether) -> None:
    secret = "do-not-log-this-value"
    _decide(pdp_node, _ev("bob", "read", "r1", subject={"note": secret}, context={"k": secret}))
    pdp_node.pdp.flush_audit(force=True)
    (entry,) = _entries(pdp_node)
    assert secret not in entry.details


def test_tether_as_an_application(tmp_path: Path) -> None:
    node = Tether(Settings(home=tmp_path, database_url="memory://"))
    try:
        node.initialize(shares=1, threshold=1)
        document = estate_document(4)
        node.estate.apply(parse_estate(document), "t", document)
        pdp = node.pdp

        def tether(subject: tuple[str, str], action: str, profile: str, **context: Any) -> Any:
            ev = Evaluation(Party(*subject), Action(action), Party("profile", profile), context)
            return pdp.evaluate("tether", ev, ACTOR)

        identity = ("identity", "nhi-00000")
        assert tether(identity, "issue", "api-read", attested=True).decision
        # Fail closed: the PDP sees no evidence unless the PEP says it verified it.
        unattested = tether(identity, "issue", "api-read")
        assert not unattested.decision
        assert "attested" in " ".join(unattested.reasons)
        not_entitled = tether(identity, "issue", "db-ro", attested=True)
        assert not not_entitled.decision
        assert any(p.startswith("guardrail:") for p in not_entitled.policy_ids)
        assert not tether(identity, "issue", "api-read", attested=True, scopes=["list"]).decision
        assert not tether(("identity", "nobody"), "issue", "api-read").decision
        assert not tether(("api_key", "nhi-00000"), "issue", "api-read").decision  # wrong kind
        assert not tether(identity, "fly", "api-read").decision
        subjects = pdp.search(
            "tether",
            Search(
                "subject",
                Party("identity", ""),
                Party("profile", "api-read"),
                Action("issue"),
                {"attested": True},
            ),
            ACTOR,
        )
        assert "nhi-00000" in subjects.results
        resources = pdp.search(
            "tether",
            Search(
                "resource",
                Party("identity", "nhi-00000"),
                Party("profile", ""),
                Action("issue"),
                {"attested": True},
            ),
            ACTOR,
        )
        assert resources.results == ("api-read",)
        actions = pdp.search(
            "tether",
            Search(
                "action",
                Party("identity", "nhi-00000"),
                Party("profile", "api-read"),
                None,
                {"attested": True},
            ),
            ACTOR,
        )
        assert "issue" in actions.results and "encrypt" not in actions.results
    finally:
        node.stop()
