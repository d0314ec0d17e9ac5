"""Reviews and exceptions through the API: who may see and decide what, decisions that
race, and defaults taken at the due date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document
from tests.govern.world import AdminApi, admin_api
from tether._internal.timeutil import format_time


class Api(AdminApi):
    def __init__(self, *parts: Any) -> None:
        super().__init__(*parts)
        self.document = estate_document(8)

    def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = self.call(method, path, token, **kwargs)
        assert response.is_success, response.text
        return response.json()

    def apply(self) -> None:
        self.ok("POST", "/v1/estate/apply", json=self.document)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with admin_api(tmp_path) as parts:
        world = Api(*parts)
        world.apply()
        yield world


def _items(api: Api, campaign: str, token: str | None = None) -> dict[str, dict[str, Any]]:
    shown = api.ok("GET", f"/v1/reviews/{campaign}", token)
    return {e["identity"]: e for e in shown["entries"]}


def test_an_owner_sees_decides_and_exports_only_its_own_identities_items(api: Api) -> None:
    api.document["identities"][1]["criticality"] = "low"  # team-b's, with team-a's 0 and 4
    api.apply()
    campaign = api.ok("POST", "/v1/reviews", json={"criticality": "low"})["id"]
    every = _items(api, campaign)
    owners = {e["owner"] for e in every.values()}
    assert owners == {"team-a", "team-b"}
    team_a = api.token("owner:team-a")
    mine = _items(api, campaign, team_a)
    assert {e["owner"] for e in mine.values()} == {"team-a"}
    theirs = next(e for e in every.values() if e["owner"] == "team-b")
    refused = api.call(
        "POST", f"/v1/reviews/items/{theirs['id']}/decide", team_a, json={"decision": "revoke"}
    )
    assert refused.status_code == 403
    api.ok("POST", f"/v1/reviews/items/{theirs['id']}/decide", json={"decision": "revoke"})
    exported = api.ok("GET", f"/v1/reviews/{campaign}/export", team_a)["changes"]
    assert exported == []  # team-b's decision is not team-a's to read
    assert api.ok("GET", f"/v1/reviews/{campaign}/export")["changes"] == [
        {"identity": theirs["identity"], "profile": theirs["profile"], "scopes": None}
    ]


def test_an_identity_handed_to_another_owner_is_reviewed_by_the_new_one(api: Api) -> None:
    campaign = api.ok("POST", "/v1/reviews", json={"owner": "team-a"})["id"]
    item = next(iter(_items(api, campaign).values()))
    for identity in api.document["identities"]:
        if identity["id"] == item["identity"]:
            identity["owner"] = "team-b"
    api.apply()
    old, new = api.token("owner:team-a"), api.token("owner:team-b")
    decide = f"/v1/reviews/items/{item['id']}/decide"
    assert api.call("POST", decide, old, json={"decision": "keep"}).status_code == 403
    assert api.ok("POST", decide, new, json={"decision": "keep"})["state"] == "keep"
    again = api.call("POST", decide, new, json={"decision": "revoke"})
    assert again.status_code == 409


def test_a_narrow_keeps_only_granted_scopes_and_a_bad_decision_changes_nothing(api: Api) -> None:
    campaign = api.ok("POST", "/v1/reviews", json={"owner": "team-a"})["id"]
    item = next(iter(_items(api, campaign).values()))
    decide = f"/v1/reviews/items/{item['id']}/decide"
    for body, field in (
        ({"decision": "maybe"}, "decision"),
        ({"decision": "narrow", "scopes": ["write"]}, "scopes"),
        ({"decision": "narrow", "scopes": []}, "scopes"),
    ):
        response = api.call("POST", decide, json=body)
        assert response.status_code == 422 and field in response.text, response.text
    assert _items(api, campaign)[item["identity"]]["state"] == "pending"
    narrowed = api.ok("POST", decide, json={"decision": "narrow", "scopes": ["read"]})
    assert narrowed["decision"]["scopes"] == ["read"]
    entitlements = api.node.view.current.identities[item["identity"]].entitlements
    assert [(e.profile_id, e.scopes) for e in entitlements] == [("api-read", ("read",))]


def test_pending_items_take_the_default_at_the_due_date(api: Api) -> None:
    due = format_time(api.clock.now + dt.timedelta(days=1))
    revoking = api.ok("POST", "/v1/reviews", json={"owner": "team-a", "due": due})["id"]
    escalating = api.ok(
        "POST", "/v1/reviews", json={"owner": "team-b", "due": due, "default": "escalate"}
    )["id"]
    api.node.govern.reviews.process_due()
    assert {e["state"] for e in _items(api, revoking).values()} == {"pending"}
    api.clock.advance(days=2)
    api.node.govern.reviews.process_due()
    assert {e["state"] for e in _items(api, revoking).values()} == {"revoke"}
    assert {e["state"] for e in _items(api, escalating).values()} == {"escalated"}
    team_a = [i["id"] for i in api.document["identities"] if i["owner"] == "team-a"]
    assert all(not api.node.view.current.identities[i].entitlements for i in team_a)
    pending_alerts = api.node.alerts.pending()
    assert pending_alerts == {}  # no sink declared: nothing to deliver to
    listed = {c["id"]: c["state"] for c in api.ok("GET", "/v1/reviews")["items"]}
    assert listed == {revoking: "completed", escalating: "completed"}


def test_an_exception_revoked_meanwhile_cannot_be_approved(api: Api) -> None:
    body = {
        "rule": "dormant",
        "identity": "nhi-00000",
        "compensating_control": "quarterly check",
        "expires": format_time(api.clock.now + dt.timedelta(days=30)),
    }
    asked = api.ok("POST", "/v1/exceptions", json=body)
    api.ok("POST", f"/v1/exceptions/{asked['id']}/revoke")
    late = api.call("POST", f"/v1/exceptions/{asked['id']}/approve")
    assert late.status_code == 409
    [listed] = api.ok("GET", "/v1/exceptions")["items"]
    assert listed["state"] == "revoked"
    too_long = api.call(
        "POST",
        "/v1/exceptions",
        json={**body, "expires": format_time(api.clock.now + dt.timedelta(days=400))},
    )
    assert too_long.status_code == 422 and "365 days" in too_long.text
    # The requester may not approve its own request.
    own = api.ok("POST", "/v1/exceptions", json=body)
    selfish = api.call("POST", f"/v1/exceptions/{own['id']}/approve")
    assert selfish.status_code == 422 and "not its requester" in selfish.text
