"""Each role's limits, in the browser: the auditor sees everything and has no button to
change anything (and a POST forged from its own page is refused); an owner cannot open
another owner's identity by its URL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.browser.conftest import OpenAs
from tests.web.browser.harness import LEASED, OTHER_OWNERS, Node, post_forms

pytestmark = pytest.mark.xdist_group("browser")

#: A forged POST: a form built in the page, with the page's own CSRF token, sent as a
#: person pressing a button would send it.
_FORGE = """([action, fields]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  const csrf = document.querySelector("input[name=csrf]").value;
  for (const [name, value] of [["csrf", csrf], ...Object.entries(fields)]) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}"""


#: How an action's button starts.
_ACTIONS = ("revoke", "request", "approve", "assign", "keep", "narrow", "start", "continue")


def forge(page: Any, action: str, fields: dict[str, str]) -> Any:
    """Submit a form to `action` from `page` (with its CSRF token); the answer."""
    with page.expect_navigation() as answer:
        page.evaluate(_FORGE, [action, fields])
    assert answer.value.request.method == "POST"
    return answer.value


def test_the_auditor_sees_every_page_and_no_action(open_as: OpenAs, node: Node) -> None:
    campaign = node.api("POST", "/v1/reviews", json={"owner": "team-b"})
    lease_id, _ = node.lease(LEASED)
    page = open_as("auditor")
    for path in (
        f"/ui/identities/{LEASED}",
        "/ui/findings",
        "/ui/reviews",
        f"/ui/reviews/{campaign['id']}",
        "/ui/exceptions",
        f"/ui/leases/{lease_id}/revoke",
    ):
        answer = page.goto(node.addr + path)
        assert answer is not None and answer.status == 200, (path, answer and answer.status)
        assert post_forms(page) == [], f"{path} offers the auditor actions"
        # Nor a button that would lead to one (filters' "Apply" buttons are GET forms).
        buttons = page.locator("main button, main a.button").all_inner_texts()
        acting = [b for b in buttons if b.strip().lower().startswith(_ACTIONS)]
        assert not acting, (path, acting)
    # The lease revoke button is not on the identity page either.
    page.goto(f"{node.addr}/ui/identities/{LEASED}")
    assert page.get_by_role("link", name=f"Revoke lease {lease_id}").count() == 0


def test_a_post_forged_by_the_auditor_is_refused(open_as: OpenAs, node: Node) -> None:
    lease_id, token = node.lease(LEASED)
    page = open_as("auditor")
    page.goto(f"{node.addr}/ui/identities/{LEASED}")
    revoke = forge(
        page,
        f"/ui/leases/{lease_id}/revoke",
        {"reason": "forged by the auditor", "confirm": "yes"},
    )
    assert revoke.status == 403, revoke.status
    page.goto(f"{node.addr}/ui/findings")
    kill = forge(
        page,
        "/ui/kill-switch",
        {"by": "identity", "target": LEASED, "reason": "forged", "confirm": f"revoke {LEASED}"},
    )
    assert kill.status == 403, kill.status
    # Nothing changed: the credential still works, and nothing was revoked in the log.
    assert node.active(token)
    assert node.lease_state(lease_id) == "active"
    auditor = node.actor_named("auditor")
    done = [e["action"] for e in node.audit(limit=10_000) if e["actor"] == auditor]
    assert set(done) <= {"web.sign_in"}, done


def test_an_owner_cannot_open_another_owners_identity(open_as: OpenAs, node: Node) -> None:
    page = open_as("owner:team-a")
    own = page.goto(f"{node.addr}/ui/identities/{LEASED}")
    assert own is not None and own.status == 200
    other = page.goto(f"{node.addr}/ui/identities/{OTHER_OWNERS}")
    assert other is not None and other.status == 404
    # Nothing of it is shown: not its purpose, not its entitlements' table.
    assert "billing export" not in page.content()
    assert page.locator("#leases").count() == 0
    page.goto(f"{node.addr}/ui/identities?q={OTHER_OWNERS}")
    assert page.locator("#inventory tbody a", has_text=OTHER_OWNERS).count() == 0
    lineage = page.goto(f"{node.addr}/ui/lineage?identity={OTHER_OWNERS}")
    assert lineage is not None and lineage.status == 404
