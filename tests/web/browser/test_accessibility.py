"""axe-core on the main pages, in the browser: no serious or critical violation.

axe is the copy bundled with `axe_playwright_python` (no CDN); it is evaluated through the
DevTools protocol, which the page's CSP does not govern, so the page is checked as served."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.browser.conftest import OpenAs
from tests.web.browser.harness import LEASED, Node

pytestmark = pytest.mark.xdist_group("browser")

BLOCKING = ("serious", "critical")


@pytest.fixture(scope="module")
def campaign(node: Node) -> str:
    """A review campaign, so its page has items to decide."""
    return str(node.api("POST", "/v1/reviews", json={"owner": "team-a"})["id"])


def readable(violations: list[dict[str, Any]]) -> str:
    """axe's violations as a person reads them: rule, impact, help, and each element."""
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        for found in v["nodes"][:10]:
            lines.append(f"    {' '.join(found['target'])}: {found['html'][:200]}")
            summary = found.get("failureSummary") or ""
            lines += [f"        {line}" for line in summary.splitlines()[:4]]
    return "\n".join(lines)


def axe(page: Any) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page).response
    return [v for v in results["violations"] if v["impact"] in BLOCKING]


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/identities",
        f"/ui/identities/{LEASED}",
        f"/ui/lineage?identity={LEASED}",
        "/ui/lineage?target=db",
        "/ui/findings",
        "/ui/reviews",
        "/ui/reviews/{campaign}",
        "/ui/audit",
        "/ui/audit/verify",
    ],
)
def test_no_serious_violation(admin_page: Any, node: Node, campaign: str, path: str) -> None:
    page = admin_page
    answer = page.goto(node.addr + path.format(campaign=campaign))
    assert answer is not None and answer.status == 200, answer and answer.status
    found = axe(page)
    assert not found, f"axe on {path}:\n{readable(found)}"


def test_the_sign_in_page(open_as: OpenAs, node: Node) -> None:
    page = open_as(signed_in=False)
    page.goto(f"{node.addr}/ui/login")
    found = axe(page)
    assert not found, f"axe on /ui/login:\n{readable(found)}"
