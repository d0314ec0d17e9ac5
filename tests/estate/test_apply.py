"""Plan and apply an estate on every storage backend: idempotent, audited, all or nothing."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.factories import estate_document
from tether._internal.canonical import canonical_json
from tether.app import Tether
from tether.config import Settings
from tether.estate import Change, EstateInvalid, Plan, load_estate_file, parse_estate
from tether.model import AuditRecord, IdentityStatus
from tether.store import IdentityFilter

ACTOR = "token:test-admin"
N = 8  # one identity of every kind


@pytest.fixture
def node(store_url: str, tmp_path: Path) -> Iterator[Tether]:
    n = Tether(Settings(home=tmp_path, database_url=store_url))
    n.initialize(1, 1)
    yield n
    n.stop()


def apply(node: Tether, document: dict[str, Any]) -> Plan:
    return node.estate.apply(parse_estate(document), ACTOR, document)


def plan(node: Tether, document: dict[str, Any]) -> Plan:
    return node.estate.plan(parse_estate(document))


def identities(node: Tether, status: str | None = None) -> dict[str, dict[str, Any]]:
    found = node.estate.list_identities(IdentityFilter(status=status, limit=10_000))
    return {i.id: i.to_spec() for i in found}


def objects(node: Tether, type_: str) -> dict[str, dict[str, Any]]:
    with node.store.read() as tx:
        return tx.estate_objects(type_)


def head(node: Tether) -> tuple[int, str]:
    with node.store.read() as tx:
        return tx.audit_head()


def audit_after(node: Tether, seq: int) -> list[AuditRecord]:
    return [r for r in node.store.iter_audit() if r.seq > seq]


def snapshot(node: Tether) -> dict[str, Any]:
    """Everything an apply could change."""
    with node.store.read() as tx:
        return {
            "identities": tx.identity_specs(),
            "objects": {
                t: tx.estate_objects(t)
                for t in ("owner", "vendor", "issuer", "profile", "kind", "policy")
            },
            "head": tx.audit_head(),
        }


# -- first and second apply --


def test_first_apply_creates_everything(node: Tether) -> None:
    document = estate_document(N)
    result = apply(node, document)

    assert result.counts() == {
        "create": 2 + 1 + 1 + 2 + 1 + N,
        "update": 0,
        "retire": 0,
        "delete": 0,
    }
    created = {(c.type, c.id) for c in result.changes}
    assert created == {
        ("owner", "team-a"),
        ("owner", "team-b"),
        ("vendor", "vendor-x"),
        ("issuer", "ci"),
        ("profile", "api-read"),
        ("profile", "db-ro"),
        ("kind", "api_key"),
        *{("identity", f"nhi-{i:05d}") for i in range(N)},
    }
    assert all(c.action == "create" and c.fields == () for c in result.changes)
    # Referenced things are created before the identities that refer to them.
    types = [c.type for c in result.changes]
    assert types.index("identity") > max(i for i, t in enumerate(types) if t != "identity")

    expected = {i.id: i.to_spec() for i in parse_estate(document).identities}
    assert identities(node) == expected
    assert all(spec["status"] == "active" for spec in identities(node).values())
    assert set(objects(node, "owner")) == {"team-a", "team-b"}
    assert objects(node, "profile")["api-read"]["max_ttl"] == "15m"
    assert objects(node, "kind") == {"api_key": {"max_ttl": "90d", "rotate_every": "30d"}}


def test_second_apply_is_an_empty_plan(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    before = snapshot(node)

    assert plan(node, document).empty
    again = apply(node, copy.deepcopy(document))
    assert again.empty
    assert again.changes == ()
    assert again.counts() == {"create": 0, "update": 0, "retire": 0, "delete": 0}
    after = snapshot(node)
    assert after["identities"] == before["identities"]
    assert after["objects"] == before["objects"]


def test_the_same_meaning_written_differently_is_no_change(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    rewritten = copy.deepcopy(document)
    rewritten["profiles"][0]["max_ttl"] = "900s"  # 15m
    rewritten["profiles"][1]["max_ttl"] = "60m"  # 1h
    rewritten["vendors"][0]["contract_ends"] = "2027-03-31T02:00:00+02:00"  # same instant
    rewritten["identities"][2]["approval"]["expires"] = "2027-01-31T00:00:00Z"
    assert plan(node, rewritten).empty
    assert apply(node, rewritten).empty


def test_the_example_and_demo_estates_apply_as_written(node: Tether) -> None:
    for path in (
        Path(__file__).parent / "data" / "design_example.yaml",
        Path(tether.__file__).parent / "_demo" / "estate.yaml",
    ):
        document = load_estate_file(path)
        first = apply(node, document)
        assert first.counts()["create"] > 0
        assert apply(node, document).empty
    assert node.verify_audit().ok


# -- updates --


def test_changing_one_identity_field_is_one_update_naming_it(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    changed = copy.deepcopy(document)
    changed["identities"][3]["purpose"] = "Terminates TLS for the new edge"

    assert plan(node, changed).changes == (Change("update", "identity", "nhi-00003", ("purpose",)),)
    result = apply(node, changed)
    assert result.changes == (Change("update", "identity", "nhi-00003", ("purpose",)),)
    assert identities(node)["nhi-00003"]["purpose"] == "Terminates TLS for the new edge"
    assert apply(node, changed).empty


@pytest.mark.parametrize(
    ("edit", "change"),
    [
        (
            lambda d: d["identities"][0].update(owner="team-b"),
            Change("update", "identity", "nhi-00000", ("owner",)),
        ),
        (
            lambda d: d["identities"][0].update(labels={"tier": "gold"}),
            Change("update", "identity", "nhi-00000", ("labels",)),
        ),
        (
            lambda d: d["identities"][1].update(environment="prod", criticality="critical"),
            Change("update", "identity", "nhi-00001", ("criticality", "environment")),
        ),
        (
            lambda d: d["identities"][2]["approval"].update(expires="2027-06-30"),
            Change("update", "identity", "nhi-00002", ("approval",)),
        ),
        (
            lambda d: d["identities"][4].update(status="suspended"),
            Change("update", "identity", "nhi-00004", ("status",)),
        ),
        (
            lambda d: d["profiles"][0].update(max_ttl="5m"),
            Change("update", "profile", "api-read", ("max_ttl",)),
        ),
        (
            lambda d: d["owners"][1].update(contact="b-pager@example.com"),
            Change("update", "owner", "team-b", ("contact",)),
        ),
        (
            lambda d: d["kinds"]["api_key"].update(review_every="60d"),
            Change("update", "kind", "api_key", ("review_every",)),
        ),
    ],
)
def test_each_edit_is_exactly_one_update(node: Tether, edit: Any, change: Change) -> None:
    document = estate_document(N)
    apply(node, document)
    edited = copy.deepcopy(document)
    edit(edited)
    assert apply(node, edited).changes == (change,)
    assert apply(node, edited).empty


# -- retire, reactivate, delete --


def test_dropping_an_identity_retires_it_and_re_adding_reactivates_it(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    dropped = copy.deepcopy(document)
    removed = dropped["identities"].pop(3)
    assert removed["id"] == "nhi-00003"

    result = apply(node, dropped)
    assert result.changes == (Change("retire", "identity", "nhi-00003", ("status",)),)
    assert result.counts()["retire"] == 1

    # Retired, never deleted: still there, with its history, under a status filter.
    assert identities(node, status="retired") == {
        "nhi-00003": {**identities(node)["nhi-00003"], "status": "retired"}
    }
    assert "nhi-00003" not in identities(node, status="active")
    assert len(identities(node, status="active")) == N - 1
    shown = node.estate.get_identity("nhi-00003", None)
    assert shown["status"] == IdentityStatus.RETIRED.value
    assert shown["justification"] == removed["justification"]

    # Applying the smaller file again does not retire it twice.
    assert apply(node, dropped).empty

    back = apply(node, document)
    assert back.changes == (Change("update", "identity", "nhi-00003", ("status",)),)
    assert identities(node)["nhi-00003"]["status"] == "active"
    assert identities(node, status="retired") == {}
    assert apply(node, document).empty


def test_deleting_an_unreferenced_owner_is_a_delete(node: Tether) -> None:
    document = estate_document(N)
    document["owners"].append({"id": "team-c", "name": "Team C", "contact": "c@example.com"})
    apply(node, document)
    assert "team-c" in objects(node, "owner")

    without = copy.deepcopy(document)
    without["owners"] = [o for o in without["owners"] if o["id"] != "team-c"]
    assert plan(node, without).changes == (Change("delete", "owner", "team-c"),)
    assert apply(node, without).changes == (Change("delete", "owner", "team-c"),)
    assert set(objects(node, "owner")) == {"team-a", "team-b"}
    assert apply(node, without).empty


def test_identities_are_retired_before_what_they_referred_to_is_deleted(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    smaller = copy.deepcopy(document)
    smaller["identities"] = [i for i in smaller["identities"] if i["owner"] == "team-a"]
    smaller["owners"] = [o for o in smaller["owners"] if o["id"] == "team-a"]
    smaller["vendors"] = []  # only the team-b api_key used it
    smaller["kinds"] = {}

    result = apply(node, smaller)
    actions = [(c.action, c.type, c.id) for c in result.changes]
    retired = [a for a in actions if a[0] == "retire"]
    deleted = [a for a in actions if a[0] == "delete"]
    assert {a[2] for a in retired} == {f"nhi-{i:05d}" for i in range(1, N, 2)}
    assert set(deleted) == {
        ("delete", "owner", "team-b"),
        ("delete", "vendor", "vendor-x"),
        ("delete", "kind", "api_key"),
    }
    assert actions == retired + deleted
    assert objects(node, "kind") == {}


# -- dry run --


def test_plan_on_an_empty_node_changes_nothing(node: Tether) -> None:
    before = snapshot(node)
    result = plan(node, estate_document(N))
    assert result.counts()["create"] == 7 + N
    assert snapshot(node) == before
    assert identities(node) == {}


def test_plan_after_apply_shows_changes_without_making_them(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    before = snapshot(node)
    edited = copy.deepcopy(document)
    edited["identities"][0]["purpose"] = "Something else"
    del edited["identities"][1]
    edited["owners"].append({"id": "team-z", "contact": "z@example.com"})

    result = plan(node, edited)
    assert sorted((c.action, c.type, c.id) for c in result.changes) == [
        ("create", "owner", "team-z"),
        ("retire", "identity", "nhi-00001"),
        ("update", "identity", "nhi-00000"),
    ]
    assert snapshot(node) == before
    assert plan(node, edited).changes == result.changes


# -- audit --


def test_every_applied_change_is_audited(node: Tether) -> None:
    start = head(node)[0]
    document = estate_document(N)
    document["owners"].append({"id": "team-c", "contact": "c@example.com"})
    first = apply(node, document)
    records = audit_after(node, start)
    _assert_audited(first, records, document)

    # A second round with every kind of change.
    edited = copy.deepcopy(document)
    edited["identities"][0]["purpose"] = "Changed"
    edited["owners"] = [o for o in edited["owners"] if o["id"] != "team-c"]
    removed = edited["identities"].pop(5)
    edited["identities"].append(
        {**edited["identities"][0], "id": "nhi-new", "justification": "CHG-9"}
    )
    mark = head(node)[0]
    second = apply(node, edited)
    assert second.counts() == {"create": 1, "update": 1, "retire": 1, "delete": 1}
    records = audit_after(node, mark)
    _assert_audited(second, records, edited)
    retire = next(r for r in records if r.action == "estate.retire")
    assert retire.identity_id == removed["id"]
    assert retire.owner_id == removed["owner"]
    assert retire.justification == removed["justification"]

    assert node.verify_audit().ok


def test_an_empty_apply_leaves_one_summary_entry(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    mark = head(node)[0]
    apply(node, document)
    [record] = audit_after(node, mark)
    assert record.action == "estate.apply"
    assert record.reason == "no change"
    assert json.loads(record.details)["summary"] == {
        "create": 0,
        "update": 0,
        "retire": 0,
        "delete": 0,
    }
    assert node.verify_audit().ok


def _assert_audited(result: Plan, records: list[AuditRecord], document: Any) -> None:
    assert len(records) == len(result.changes) + 1
    *changes, summary = records
    by_identity = {i["id"]: i for i in document["identities"]}
    for change, record in zip(result.changes, changes, strict=True):
        assert record.action == f"estate.{change.action}"
        assert record.actor == ACTOR
        assert record.result == "ok"
        details = json.loads(record.details)
        assert details == {"type": change.type, "id": change.id, "fields": list(change.fields)}
        if change.type == "identity":
            assert record.identity_id == change.id
            if change.action != "retire":
                assert record.owner_id == by_identity[change.id]["owner"]
                assert record.justification == by_identity[change.id]["justification"]
            assert record.owner_id
            assert record.justification
        elif change.type == "owner":
            assert record.owner_id == change.id
    assert summary.action == "estate.apply"
    assert summary.actor == ACTOR
    details = json.loads(summary.details)
    assert details["summary"] == result.counts()
    expected_digest = hashlib.sha256(canonical_json(document).encode()).hexdigest()
    assert details["document_sha256"] == expected_digest
    seqs = [r.seq for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# -- all or nothing --


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["identities"][3].update(owner="team-gone"),
        lambda d: d["identities"].append(copy.deepcopy(d["identities"][0])),
        lambda d: d["profiles"][0].update(max_ttl="0s"),
        lambda d: d.update(surprise=True),
    ],
)
def test_an_invalid_estate_is_refused_before_any_write(node: Tether, breakage: Any) -> None:
    document = estate_document(N)
    apply(node, document)
    before = snapshot(node)

    bad = copy.deepcopy(document)
    bad["identities"].pop(1)  # would retire one, if it got that far
    bad["identities"][0]["purpose"] = "would be an update"
    breakage(bad)
    with pytest.raises(EstateInvalid):
        apply(node, bad)

    assert snapshot(node) == before
    assert node.verify_audit().ok


def test_a_failure_inside_apply_rolls_everything_back(node: Tether) -> None:
    document = estate_document(N)
    apply(node, document)
    before = snapshot(node)

    edited = copy.deepcopy(document)
    edited["identities"].pop(2)
    edited["identities"][0]["purpose"] = "Changed"
    edited["owners"].append({"id": "team-c", "contact": "c@example.com"})
    estate = parse_estate(edited)
    # The document cannot be digested for the audit summary, so the audit write fails
    # after every change was written in the transaction: none of them may remain.
    with pytest.raises(TypeError):
        node.estate.apply(estate, ACTOR, document={"not json": object()})

    assert snapshot(node) == before
    assert node.verify_audit().ok
    assert apply(node, edited).counts() == {"create": 1, "update": 1, "retire": 1, "delete": 0}
