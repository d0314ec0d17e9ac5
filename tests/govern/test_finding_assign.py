"""Assigning a finding: through the service and POST /v1/findings/{id}/assign, by admins and
the owner of its identity only, kept by re-evaluation, audited with who assigned it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document
from tests.govern.world import AdminApi, admin_api
from tether.govern import FindingFilter, InvalidUsage, UnknownGovernObject


@pytest.fixture
def api(tmp_path: Path) -> Iterator[AdminApi]:
    with admin_api(tmp_path) as parts:
        world = AdminApi(*parts)
        world.post("/v1/estate/apply", estate_document(8))
        world.post("/v1/findings/evaluate")
        yield world


def _details(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _finding(api: AdminApi, owner: str) -> dict[str, Any]:
    items = api.get("/v1/findings", owner=owner, state="open")["items"]
    assert items, f"no open finding of {owner}"
    return dict(items[0])


def _assign_events(api: AdminApi) -> list[dict[str, Any]]:
    """The `finding.assign` entries of the audit log, their details parsed."""
    entries = api.get("/v1/audit", limit=1000)["items"]
    return [
        {
            **e,
            "details": json.loads(e["details"]) if isinstance(e["details"], str) else e["details"],
        }
        for e in entries
        if e["action"] == "finding.assign"
    ]


def test_an_admin_assigns_and_it_is_stored_listed_and_audited(api: AdminApi) -> None:
    finding = _finding(api, "team-b")
    shown = api.post(f"/v1/findings/{finding['id']}/assign", {"assignee": " dana@example.com "})
    assert shown["assignee"]["to"] == "dana@example.com"
    assert shown["assignee"]["by"].startswith("token:")
    assert shown["state"] == "open" and shown["id"] == finding["id"]

    listed = api.get("/v1/findings", assignee="dana@example.com")["items"]
    assert [f["id"] for f in listed] == [finding["id"]]
    unassigned = api.get("/v1/findings", assignee="")["items"]
    assert finding["id"] not in {f["id"] for f in unassigned}

    (event,) = _assign_events(api)
    assert event["identity_id"] == finding["identity"]
    assert event["owner_id"] == "team-b"
    assert event["details"]["finding"] == finding["id"]
    assert event["details"]["rule"] == finding["rule"]
    assert event["details"]["assignee"] == "dana@example.com"
    assert event["actor"] == shown["assignee"]["by"]


def test_the_assignee_survives_re_evaluation_when_the_finding_is_written_again(
    api: AdminApi,
) -> None:
    finding = _finding(api, "team-a")
    api.post(f"/v1/findings/{finding['id']}/assign", {"assignee": "sam@example.com"})
    before = api.get("/v1/findings", identity=finding["identity"], rule=finding["rule"])["items"]
    api.clock.advance(minutes=5)  # past the rewrite threshold: the finding is rewritten
    api.post("/v1/findings/evaluate")
    (after,) = api.get("/v1/findings", identity=finding["identity"], rule=finding["rule"])["items"]
    assert after["last_seen"] != before[0]["last_seen"]  # it was written again
    assert after["assignee"]["to"] == "sam@example.com"


def test_an_empty_assignee_unassigns(api: AdminApi) -> None:
    finding = _finding(api, "team-a")
    api.post(f"/v1/findings/{finding['id']}/assign", {"assignee": "sam@example.com"})
    shown = api.post(f"/v1/findings/{finding['id']}/assign", {"assignee": ""})
    assert "assignee" not in shown
    last = _assign_events(api)[-1]
    assert last["details"]["assignee"] is None
    assert last["details"]["previous"] == "sam@example.com"


@pytest.mark.parametrize("bad", ["x" * 256, "dana\nforged line", "rtl\u202eevil", "tab\there"])
def test_a_bad_assignee_is_refused_and_changes_nothing(api: AdminApi, bad: str) -> None:
    finding = _finding(api, "team-a")
    refused = api.call("POST", f"/v1/findings/{finding['id']}/assign", json={"assignee": bad})
    assert refused.status_code == 422, refused.text
    assert "assignee" in refused.text
    assert "assignee" not in _finding(api, "team-a")
    assert _assign_events(api) == []


def test_an_owner_assigns_its_own_findings_only(api: AdminApi) -> None:
    team_a = api.token("owner:team-a")
    mine = _finding(api, "team-a")
    theirs = _finding(api, "team-b")
    ok = api.call(
        "POST", f"/v1/findings/{mine['id']}/assign", team_a, json={"assignee": "a@example.com"}
    )
    assert ok.status_code == 200, ok.text
    refused = api.call(
        "POST", f"/v1/findings/{theirs['id']}/assign", team_a, json={"assignee": "a@example.com"}
    )
    assert refused.status_code == 404
    assert "assignee" not in _finding(api, "team-b")
    auditor = api.token("auditor")
    forbidden = api.call(
        "POST", f"/v1/findings/{mine['id']}/assign", auditor, json={"assignee": "x@example.com"}
    )
    assert forbidden.status_code == 403
    assert [e["details"]["finding"] for e in _assign_events(api)] == [mine["id"]]


def test_the_service_refuses_unknown_and_unseen_findings(api: AdminApi) -> None:
    govern = api.node.govern
    with pytest.raises(UnknownGovernObject):
        govern.assign("fnd_000000000000000000000000", "a@example.com", "test", None)
    theirs = _finding(api, "team-b")
    with pytest.raises(UnknownGovernObject):
        govern.assign(theirs["id"], "a@example.com", "test", ("team-a",))
    with pytest.raises(InvalidUsage):
        govern.assign(theirs["id"], "a\x00b", "test", None)
    shown = govern.assign(theirs["id"], "b@example.com", "test", ("team-b",))
    assert shown["assignee"] == {"to": "b@example.com", "by": "test", "at": shown["assignee"]["at"]}
    found = govern.findings(FindingFilter(assignee="b@example.com", owner_in=("team-b",)))
    assert [f["id"] for f in found] == [theirs["id"]]
    assert govern.findings(FindingFilter(assignee="b@example.com", owner_in=("team-a",))) == []


def test_an_assignment_made_while_the_engine_evaluates_is_not_overwritten(
    api: AdminApi,
) -> None:
    """The engine reads findings, evaluates, then writes: an assignment made in between
    must survive the write of what the engine read before it."""
    from dataclasses import replace

    from tether.govern._engine import FINDING

    finding = _finding(api, "team-a")
    with api.node.store.read() as tx:
        read_before = tx.get_govern(FINDING, finding["id"])
    assert read_before is not None
    api.node.govern.assign(finding["id"], "dana@example.com", "token:test(dana)")
    api.clock.advance(minutes=5)
    rewritten = replace(
        read_before,
        spec={**read_before.spec, "last_seen": api.clock().isoformat()},
        updated_at=api.clock(),
    )
    api.node.govern.engine._commit([rewritten], [], [], api.clock())
    shown = api.node.govern.findings(FindingFilter(identity=finding["identity"]))
    mine = next(f for f in shown if f["id"] == finding["id"])
    assert mine["assignee"]["to"] == "dana@example.com"


def test_an_owner_token_that_is_also_auditor_assigns_only_its_own(api: AdminApi) -> None:
    """The auditor role widens what a token reads, never what it changes."""
    both = api.post("/v1/tokens", {"name": "a-and-aud", "roles": ["owner:team-a", "auditor"]})
    other = _finding(api, "team-b")
    answer = api.call(
        "POST", f"/v1/findings/{other['id']}/assign", both["token"], json={"assignee": "x@y"}
    )
    assert answer.status_code == 404
    mine = _finding(api, "team-a")
    answer = api.call(
        "POST", f"/v1/findings/{mine['id']}/assign", both["token"], json={"assignee": "x@y"}
    )
    assert answer.status_code == 200
