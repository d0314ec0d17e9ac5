"""The issue's flow in a real browser, as one person at the dashboard: sign in, find an
identity, open it, follow its lineage to a target, revoke a lease, decide a review item,
except a finding, see those actions in the audit log, verify the chain."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.web.browser.conftest import OpenAs
from tests.web.browser.harness import LEASED, TARGET, Node

pytestmark = pytest.mark.xdist_group("browser")

#: The flow signs in with an admin token of its own, so its audit entries are its own.
FLOW_ROLE = "admin"
FLOW_TOKEN_NAME = "browser-flow"


def _storage(page: Any) -> str:
    joined: str = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
        " document.cookie])"
    )
    return joined


def test_sign_in_keeps_the_token_out_of_the_browser(open_as: OpenAs, node: Node) -> None:
    token = node.named_token(FLOW_TOKEN_NAME, FLOW_ROLE)
    page = open_as(signed_in=False)
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.goto(f"{node.addr}/ui/identities")
    # Not signed in: sent to the sign-in form, which comes back here afterwards.
    assert "/ui/login" in page.url
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{node.addr}/ui/identities")
    assert page.get_by_role("heading", level=1).inner_text() == "Inventory"

    assert not [url for url in seen if token in url], "the token went into a URL"
    assert token not in page.content()
    assert token not in _storage(page)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["tether_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/ui"
    assert token not in session["value"]
    # HttpOnly: the page's own script cannot read the session either.
    assert "tether_session" not in page.evaluate("() => document.cookie")


def test_the_whole_flow(open_as: OpenAs, node: Node) -> None:
    token = node.named_token(FLOW_TOKEN_NAME, FLOW_ROLE)
    actor = node.actor_named(FLOW_TOKEN_NAME)
    lease_id, leased_token = node.lease(LEASED)
    assert node.active(leased_token)
    campaign = node.api("POST", "/v1/reviews", json={"owner": "team-a"})
    page = open_as(token=token)

    # Find an identity by search, and open its page.
    page.goto(f"{node.addr}/ui/identities")
    search = page.get_by_label("Search")
    search.fill(LEASED)
    search.press("Enter")
    page.wait_for_url(re.compile(r"/ui/identities\?.*q=" + LEASED))
    rows = page.locator("#inventory tbody tr")
    assert rows.count() == 1, rows.all_inner_texts()
    follow(page, rows.get_by_role("link", name=LEASED, exact=True))
    assert page.url == f"{node.addr}/ui/identities/{LEASED}"
    assert page.get_by_role("heading", level=1).inner_text() == LEASED

    # Its lineage graph, followed node by node: the identity, its profile, the target.
    follow(page, page.get_by_role("link", name="Lineage: what can this reach?"))
    assert re.search(rf"/ui/lineage\?identity={LEASED}$", page.url), page.url
    graph = page.locator("main svg")
    follow(page, graph.get_by_role("link", name=f"identity {LEASED}: open its lineage"))
    assert re.search(rf"/ui/lineage\?identity={LEASED}$", page.url), page.url
    follow(page, graph.get_by_role("link", name="profile db-ro: open its lineage"))
    assert re.search(r"/ui/lineage\?profile=db-ro$", page.url), page.url
    follow(page, graph.get_by_role("link", name=f"target {TARGET}: open its lineage"))
    assert re.search(rf"/ui/lineage\?target={TARGET}&direction=reachers$", page.url), page.url
    # Who can reach the target: the identity we came from is on the graph.
    assert graph.get_by_role("link", name=f"identity {LEASED}: open its lineage").count() == 1

    # Revoke the lease from the identity page, through its confirmation.
    page.goto(f"{node.addr}/ui/identities/{LEASED}")
    follow(page, page.get_by_role("link", name=f"Revoke lease {lease_id}"))
    assert page.url == f"{node.addr}/ui/leases/{lease_id}/revoke"
    assert node.active(leased_token), "the confirmation page itself changes nothing"
    page.get_by_label(re.compile("I want to revoke")).check()
    follow(page, page.get_by_role("button", name="Revoke lease"))
    assert page.locator(".notice").count() == 1, page.content()
    assert not node.active(leased_token)
    assert node.lease_state(lease_id) in ("revoked", "revoking")
    revocations = [e for e in node.audit(limit=10_000) if e["action"] == "lease.revoke"]
    assert [e["actor"] for e in revocations if lease_id in str(e)] == [actor], revocations

    # Decide a review item.
    page.goto(f"{node.addr}/ui/reviews")
    follow(page, page.get_by_role("link", name=re.compile(campaign["id"])).first)
    assert page.url == f"{node.addr}/ui/reviews/{campaign['id']}"
    # The first item's form: its decisions are its buttons (keep, narrow, revoke).
    item = page.locator("form[method=post]", has=page.locator("button[name=decision]")).first
    follow(page, item.get_by_role("button", name="Keep"))
    shown = node.api("GET", f"/v1/reviews/{campaign['id']}")
    assert shown["decided"] == 1, shown
    decided = [e for e in shown["entries"] if e.get("decision")]
    assert [(e["decision"]["decision"], e["decision"]["by"]) for e in decided] == [
        ("keep", actor)
    ], decided

    # Except a finding: requested here with a reason and an expiry, approved by another
    # admin (an exception's approver is never its requester), then the finding is excepted.
    finding = _open_finding(node, "nhi-00003")
    page.goto(f"{node.addr}/ui/findings")
    row = page.locator(f"#finding-{finding['id']}")
    row.get_by_text("Request an exception").click()
    row.get_by_label("Compensating control").fill("Weekly manual review of its use")
    row.get_by_label("Reason").fill("Metadata lands with the next estate change")
    follow(page, row.get_by_role("button", name="Request exception"))
    requested = [
        e
        for e in node.api("GET", "/v1/exceptions")["items"]
        if e["identity"] == finding["identity"] and e["rule"] == finding["rule"]
    ]
    assert len(requested) == 1 and requested[0]["requested_by"] == actor, requested
    approver = open_as()
    approver.goto(f"{node.addr}/ui/exceptions")
    follow(approver, approver.get_by_role("button", name=f"Approve {requested[0]['id']}"))
    assert _finding_state(node, finding["id"]) == "excepted"

    # The audit log shows those actions, by this session's actor.
    page.goto(f"{node.addr}/ui/audit")
    page.get_by_label("Actor").fill(actor)
    with page.expect_navigation():
        page.get_by_label("Actor").press("Enter")
    assert "actor=" in page.url, page.url
    logged = {e["action"] for e in node.audit(limit=10_000) if e["actor"] == actor}
    assert {"lease.revoke", "web.sign_in"} <= logged, logged
    shown_text = page.locator("main").inner_text()
    for action in logged:
        assert action in shown_text, (action, shown_text[:2000])
    assert any("review" in a for a in logged) and "exception.request" in logged, logged

    # And the chain verifies.
    entries = len(node.audit(limit=10_000))
    page.goto(f"{node.addr}/ui/audit/verify")
    verdict = page.get_by_role("status").inner_text()
    counted = re.match(r"Verified: ([\d,]+) entries", verdict)
    assert counted and int(counted.group(1).replace(",", "")) >= entries, verdict


def follow(page: Any, link: Any) -> None:
    """Click `link` and wait for the page it opens (even the same URL again)."""
    with page.expect_navigation():
        link.click()


def _open_finding(node: Node, identity: str) -> dict[str, Any]:
    found = node.api("GET", "/v1/findings", params={"identity": identity, "state": "open"})
    assert found["items"], f"the estate should give {identity} an open finding"
    item: dict[str, Any] = found["items"][0]
    return item


def _finding_state(node: Node, finding_id: str) -> str:
    for item in node.api("GET", "/v1/findings", params={"state": "excepted"})["items"]:
        if item["id"] == finding_id:
            return "excepted"
    return "not excepted"
