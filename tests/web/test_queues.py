"""The work queues of the dashboard: findings (assign, except), exceptions (approve),
access reviews (decide), the kill switch, alerts and discovery; each change made through
the service the API uses, audited as the signed-in principal, refused to the auditor and
to an owner outside its own."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.govern.world import AdminApi
from tests.web.dash import Dash, dashboard, session_as
from tether.model import AuditEvent

_POST_FORM = re.compile(r'<form method="post" action="([^"]+)"')


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[AdminApi, Dash]]:
    with dashboard(tmp_path) as (api, dash):
        api.post("/v1/findings/evaluate")
        yield api, dash


def _details(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _audit(api: AdminApi, action: str) -> list[dict[str, Any]]:
    entries = api.get("/v1/audit", limit=10000)["items"]
    return [
        {
            **e,
            "details": json.loads(e["details"]) if isinstance(e["details"], str) else e["details"],
        }
        for e in entries
        if e["action"] == action
    ]


def _actor_of(api: AdminApi, dash: Dash) -> str:
    """The audit actor of `dash`'s signed-in principal (from its sign-in entry)."""
    dash.get("/ui/")
    signed_in = _audit(api, "web.sign_in")
    assert signed_in
    return str(signed_in[-1]["actor"])


def _findings(api: AdminApi, **query: Any) -> list[dict[str, Any]]:
    return list(api.get("/v1/findings", **query)["items"])


def _post_forms(page: httpx.Response) -> list[str]:
    """The targets of the POST forms of a page, the sign-out form left out."""
    return [a for a in _POST_FORM.findall(page.text) if a != "/ui/logout"]


def _row(page: httpx.Response, row_id: str) -> str:
    start = page.text.index(f'<tr id="{row_id}">')
    return page.text[start : page.text.index("</tr>", start)]


# -- findings --
def test_an_assignment_from_the_page_shows_survives_re_evaluation_and_is_audited(
    world: tuple[AdminApi, Dash],
) -> None:
    api, dash = world
    actor = _actor_of(api, dash)
    finding = _findings(api, owner="team-b", state="open")[0]
    page = dash.get("/ui/findings")
    assert f'action="/ui/findings/{finding["id"]}/assign"' in page.text
    done = dash.post(
        f"/ui/findings/{finding['id']}/assign",
        {"assignee": "dana@example.com", "back": "/ui/findings?owner=team-b"},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith("/ui/findings?owner=team-b&notice=")

    row = _row(dash.get("/ui/findings"), f"finding-{finding['id']}")
    assert "dana@example.com" in row and actor in row

    api.clock.advance(minutes=5)  # the finding is written again by the evaluation
    api.post("/v1/findings/evaluate")
    (again,) = _findings(api, identity=finding["identity"], rule=finding["rule"])
    assert again["last_seen"] != finding["last_seen"]
    assert again["assignee"]["to"] == "dana@example.com"
    assert "dana@example.com" in _row(dash.get("/ui/findings"), f"finding-{finding['id']}")

    only = dash.get("/ui/findings", assignee="dana@example.com")
    assert f"finding-{finding['id']}" in only.text
    assert only.text.count('<tr id="finding-') == 1

    (event,) = _audit(api, "finding.assign")
    assert event["actor"] == actor and actor.startswith("token:tok_")
    assert event["identity_id"] == finding["identity"]
    assert event["details"] == {
        "finding": finding["id"],
        "rule": finding["rule"],
        "assignee": "dana@example.com",
        "previous": None,
    }


def test_a_bad_assignee_is_refused_naming_the_field_and_changes_nothing(
    world: tuple[AdminApi, Dash],
) -> None:
    api, dash = world
    finding = _findings(api, owner="team-a", state="open")[0]
    for bad in ("x" * 300, "dana\u202e@example.com", "two\nlines"):
        refused = dash.post(f"/ui/findings/{finding['id']}/assign", {"assignee": bad})
        assert refused.status_code == 422, refused.text
        assert "assignee" in refused.text
    missing = dash.post(f"/ui/findings/{finding['id']}/assign", {})
    assert missing.status_code == 400 and "assignee" in missing.text
    unknown = dash.post("/ui/findings/fnd_00000000000000000000dead/assign", {"assignee": "a"})
    assert unknown.status_code == 404
    assert _audit(api, "finding.assign") == []
    assert "assignee" not in _findings(api, identity=finding["identity"])[0]


def test_an_exception_requested_from_the_page_approved_by_another_admin_excepts_the_finding(
    world: tuple[AdminApi, Dash],
) -> None:
    api, dash = world
    requester = _actor_of(api, dash)
    finding = _findings(api, owner="team-b", state="open")[0]
    expires = (api.clock() + dt.timedelta(days=30)).date().isoformat()
    form = {
        "rule": finding["rule"],
        "identity": finding["identity"],
        "compensating_control": "weekly manual check",
        "reason": "vendor fix due next quarter",
        "expires": expires,
        "scope": "",
        "back": "/ui/findings",
    }
    past = dash.post("/ui/exceptions", {**form, "expires": "2001-01-01"})
    assert past.status_code == 422 and "expires" in past.text
    requested = dash.post("/ui/exceptions", form)
    assert requested.status_code == 303, requested.text
    (waiver,) = api.get("/v1/exceptions", state="requested")["items"]
    assert waiver["requested_by"] == requester
    assert waiver["identity"] == finding["identity"]

    listing = dash.get("/ui/exceptions")
    assert f'action="/ui/exceptions/{waiver["id"]}/approve"' in listing.text
    own = dash.post(f"/ui/exceptions/{waiver['id']}/approve", {"back": "/ui/exceptions"})
    assert own.status_code == 422
    assert "the approver of an exception is not its requester" in own.text

    second = session_as(api, "admin")
    approver = _actor_of(api, second)
    second.get("/ui/exceptions")
    approved = second.post(f"/ui/exceptions/{waiver['id']}/approve", {"back": "/ui/exceptions"})
    assert approved.status_code == 303, approved.text
    (active,) = api.get("/v1/exceptions", state="active")["items"]
    assert active["approved_by"] == approver != requester
    shown = second.get("/ui/exceptions")
    assert requester in shown.text and approver in shown.text

    api.post("/v1/findings/evaluate")
    (now,) = _findings(api, identity=finding["identity"], rule=finding["rule"])
    assert now["state"] == "excepted"
    excepted = dash.get("/ui/findings", state="excepted")
    assert f"finding-{finding['id']}" in excepted.text
    (event,) = _audit(api, "exception.approve")
    assert event["actor"] == approver


# -- reviews --
def test_an_owner_decides_its_review_items_from_the_page_and_not_another_owners(
    world: tuple[AdminApi, Dash],
) -> None:
    api, _ = world
    mine = api.post("/v1/reviews", {"owner": "team-a"})
    theirs = api.post("/v1/reviews", {"owner": "team-b"})
    team_a = session_as(api, "owner:team-a")
    actor = _actor_of(api, team_a)

    listing = team_a.get("/ui/reviews")
    assert mine["id"] in listing.text and theirs["id"] not in listing.text
    assert 'action="/ui/reviews"' not in listing.text  # starting one is for admins

    page = team_a.get(f"/ui/reviews/{mine['id']}")
    assert page.status_code == 200
    entries = api.get(f"/v1/reviews/{mine['id']}")["entries"]
    keep, narrow = entries[0], entries[1]
    assert "Last used" in _row(page, f"item-{keep['id']}")
    kept = team_a.post(f"/ui/reviews/items/{keep['id']}/decide", {"decision": "keep"})
    assert kept.status_code == 303, kept.text
    narrowed = team_a.post(
        f"/ui/reviews/items/{narrow['id']}/decide",
        {"decision": "narrow", "scopes": "read", "reason": "read is enough"},
    )
    assert narrowed.status_code == 303, narrowed.text
    none_kept = team_a.post(f"/ui/reviews/items/{entries[2]['id']}/decide", {"decision": "narrow"})
    assert none_kept.status_code == 422 and "scopes" in none_kept.text

    after = {e["id"]: e for e in api.get(f"/v1/reviews/{mine['id']}")["entries"]}
    assert after[keep["id"]]["state"] == "keep"
    assert after[narrow["id"]]["decision"]["scopes"] == ["read"]
    assert after[entries[2]["id"]]["state"] == "pending"
    shown = _row(team_a.get(f"/ui/reviews/{mine['id']}"), f"item-{keep['id']}")
    assert "keep" in shown and actor in shown and "/decide" not in shown
    assert {e["actor"] for e in _audit(api, "review.decide")} == {actor}

    other = api.get(f"/v1/reviews/{theirs['id']}")["entries"][0]
    assert team_a.get(f"/ui/reviews/{theirs['id']}").status_code == 404
    refused = team_a.post(f"/ui/reviews/items/{other['id']}/decide", {"decision": "revoke"})
    assert refused.status_code == 403
    assert api.get(f"/v1/reviews/{theirs['id']}")["entries"][0]["state"] == "pending"


def test_an_admin_starts_a_review_from_the_page(world: tuple[AdminApi, Dash]) -> None:
    api, dash = world
    dash.get("/ui/reviews")
    two = dash.post("/ui/reviews", {"owner": "team-a", "kind": "workload", "due": ""})
    assert two.status_code == 422 and "scope" in two.text
    started = dash.post("/ui/reviews", {"owner": "team-b", "due": "2099-01-01"})
    assert started.status_code == 303, started.text
    (campaign,) = api.get("/v1/reviews")["items"]
    assert started.headers["location"].startswith(f"/ui/reviews/{campaign['id']}")
    assert campaign["scope"] == {"owner": "team-b"}
    assert campaign["created_by"] == _actor_of(api, dash)


# -- the kill switch --
def _live(api: AdminApi, identity: str) -> list[dict[str, Any]]:
    leases = api.get("/v1/leases", identity=identity)["items"]
    return [lease for lease in leases if lease["state"] in ("pending", "active")]


def test_the_kill_switch_by_identity_revokes_its_live_lease_after_a_typed_confirmation(
    world: tuple[AdminApi, Dash],
) -> None:
    api, dash = world
    api.task("nhi-00001")
    assert _live(api, "nhi-00001")
    page = dash.get("/ui/kill-switch", by="identity", target="nhi-00001")
    assert 'data-confirm="revoke nhi-00001"' in page.text
    form = {"by": "identity", "target": "nhi-00001", "reason": "incident 42"}
    wrong = dash.post("/ui/kill-switch", {**form, "confirm": "revoke nhi-00002"})
    assert wrong.status_code == 400 and "confirm" in wrong.text
    assert _live(api, "nhi-00001")
    done = dash.post("/ui/kill-switch", {**form, "confirm": "revoke nhi-00001"})
    assert done.status_code == 303, done.text
    assert "Revoked+1+lease" in done.headers["location"]
    assert _live(api, "nhi-00001") == []
    revoked = [e for e in _audit(api, "lease.revoke") if e["identity_id"] == "nhi-00001"]
    assert revoked and {e["actor"] for e in revoked} == {_actor_of(api, dash)}


def test_the_kill_switch_for_everything_needs_revoke_everything(
    world: tuple[AdminApi, Dash],
) -> None:
    api, dash = world
    api.task("nhi-00000")
    page = dash.get("/ui/kill-switch", by="all")
    assert 'data-confirm="revoke everything"' in page.text
    wrong = dash.post("/ui/kill-switch", {"by": "all", "reason": "r", "confirm": "revoke all"})
    assert wrong.status_code == 400 and "confirm" in wrong.text
    assert _live(api, "nhi-00000")
    everything = {"by": "all", "reason": "r", "confirm": "revoke everything"}
    done = dash.post("/ui/kill-switch", everything)
    assert done.status_code == 303
    assert _live(api, "nhi-00000") == []


# -- who may do what --
_READ_PAGES = ("/ui/findings", "/ui/exceptions", "/ui/reviews", "/ui/alerts", "/ui/discovery")


def test_the_auditor_reads_every_queue_and_changes_nothing(world: tuple[AdminApi, Dash]) -> None:
    api, _ = world
    campaign = api.post("/v1/reviews", {"owner": "team-a"})
    finding = _findings(api, owner="team-a", state="open")[0]
    api.task("nhi-00000")
    auditor = session_as(api, "auditor")
    for path in (*_READ_PAGES, f"/ui/reviews/{campaign['id']}", "/ui/findings?state=any"):
        page = auditor.get(path)
        assert page.status_code == 200, path
        assert _post_forms(page) == [], path
        assert "<button" not in page.text.replace(
            '<button type="submit" class="quiet">Sign out</button>', ""
        ).replace('<button type="submit">Apply</button>', ""), path
    assert auditor.get("/ui/kill-switch").status_code == 403
    item = api.get(f"/v1/reviews/{campaign['id']}")["entries"][0]
    before = api.get("/v1/audit", limit=10000)["items"][-1]["seq"]
    forged = {
        f"/ui/findings/{finding['id']}/assign": {"assignee": "mallory@example.com"},
        "/ui/exceptions": {
            "rule": finding["rule"],
            "identity": finding["identity"],
            "compensating_control": "none",
            "expires": "2099-01-01",
        },
        f"/ui/reviews/items/{item['id']}/decide": {"decision": "revoke"},
        "/ui/reviews": {"owner": "team-a"},
        "/ui/kill-switch": {
            "by": "all",
            "reason": "r",
            "confirm": "revoke everything",
        },
    }
    for path, data in forged.items():
        refused = auditor.post(path, data)
        assert refused.status_code == 403, (path, refused.text)
    after = api.get("/v1/audit", limit=10000)["items"]
    assert [e["action"] for e in after if e["seq"] > before] == []
    assert "assignee" not in _findings(api, identity=finding["identity"])[0]
    assert _live(api, "nhi-00000")


def test_an_owner_sees_and_changes_only_its_own(world: tuple[AdminApi, Dash]) -> None:
    api, _ = world
    team_a = session_as(api, "owner:team-a")
    page = team_a.get("/ui/findings", state="any")
    owners = set(re.findall(r'<tr id="finding-[^"]+">.*?<td>(team-[ab])</td>', page.text, re.S))
    assert owners == {"team-a"}
    mine = _findings(api, owner="team-a", state="open")[0]
    theirs = _findings(api, owner="team-b", state="open")[0]
    assert f"finding-{theirs['id']}" not in page.text
    assert f'action="/ui/findings/{mine["id"]}/assign"' in page.text

    ok = team_a.post(f"/ui/findings/{mine['id']}/assign", {"assignee": "a@example.com"})
    assert ok.status_code == 303
    refused = team_a.post(f"/ui/findings/{theirs['id']}/assign", {"assignee": "a@example.com"})
    assert refused.status_code == 404
    assert "assignee" not in _findings(api, identity=theirs["identity"])[0]

    not_theirs = team_a.post(
        "/ui/exceptions",
        {
            "rule": theirs["rule"],
            "identity": theirs["identity"],
            "compensating_control": "c",
            "expires": "2099-01-01",
        },
    )
    assert not_theirs.status_code == 403
    assert api.get("/v1/exceptions")["items"] == []

    api.task("nhi-00001")  # team-b's
    kill = team_a.get("/ui/kill-switch", by="owner", target="team-a")
    assert 'data-confirm="revoke team-a"' in kill.text
    foreign = team_a.get("/ui/kill-switch", by="owner", target="team-b")
    assert "data-confirm" not in foreign.text
    for data in (
        {"by": "owner", "target": "team-b", "confirm": "revoke team-b"},
        {"by": "identity", "target": "nhi-00001", "confirm": "revoke nhi-00001"},
    ):
        forbidden = team_a.post("/ui/kill-switch", {**data, "reason": "r"})
        assert forbidden.status_code == 403, forbidden.text
    assert _live(api, "nhi-00001")
    api.task("nhi-00000")  # team-a's
    refused_page = team_a.get("/ui/kill-switch", by="identity", target="nhi-00001")
    assert "data-confirm" not in refused_page.text and "owners may revoke only" in refused_page.text
    mine_page = team_a.get("/ui/kill-switch", by="identity", target="nhi-00000")
    assert 'data-confirm="revoke nhi-00000"' in mine_page.text
    own = team_a.post(
        "/ui/kill-switch",
        {"by": "identity", "target": "nhi-00000", "reason": "r", "confirm": "revoke nhi-00000"},
    )
    assert own.status_code == 303, own.text
    assert _live(api, "nhi-00000") == []
    assert _live(api, "nhi-00001")
    by_owner = team_a.post(
        "/ui/kill-switch",
        {"by": "owner", "target": "team-a", "reason": "r", "confirm": "revoke team-a"},
    )
    assert by_owner.status_code == 303
    assert _live(api, "nhi-00001")

    for path in ("/ui/alerts", "/ui/discovery"):
        assert team_a.get(path).status_code == 403, path
    assert team_a.get("/ui/exceptions").status_code == 200


# -- alerts and discovery --
def test_alerts_show_newest_first_and_discovery_the_migration_report(
    world: tuple[AdminApi, Dash],
) -> None:
    api, dash = world
    node = api.node
    with node.store.transaction() as tx:
        node.audit.append(
            tx,
            [
                AuditEvent(action="alert.first", actor="test", identity_id="nhi-00000"),
                AuditEvent(action="alert.second", actor="test", reason="second one"),
            ],
        )
    page = dash.get("/ui/alerts")
    assert page.status_code == 200
    assert page.text.index("alert.second") < page.text.index("alert.first")
    older = dash.get("/ui/alerts", limit="1")
    assert "alert.second" in older.text and "alert.first" not in older.text
    assert "Older alerts" in older.text

    discovery = dash.get("/ui/discovery")
    assert discovery.status_code == 200
    for row in api.get("/v1/reports/migration")["items"]:
        assert row["secret"] in discovery.text
    assert dash.get("/ui/discovery", state="bogus").status_code == 400
