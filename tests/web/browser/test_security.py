"""The dashboard's defences as a browser meets them: its security headers, a form posted
from another site (and from another origin of the same site) refused, and no request of
its pages leaving for another origin."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.web.browser.conftest import OpenAs
from tests.web.browser.harness import LEASED, NetworkLog, Node
from tether.web import CONTENT_SECURITY_POLICY
from tether.web._app import SECURITY_HEADERS

pytestmark = pytest.mark.xdist_group("browser")

#: Referrer policies that send no dashboard URL to another origin.
STRICT_REFERRER = ("no-referrer", "same-origin")
#: The pages a person spends the day on.
MAIN_PAGES = (
    "/ui/",
    "/ui/identities",
    f"/ui/identities/{LEASED}",
    f"/ui/lineage?identity={LEASED}",
    "/ui/findings",
    "/ui/reviews",
    "/ui/audit",
)


def test_every_main_page_has_the_security_headers_and_obeys_its_policy(
    open_as: OpenAs, node: Node
) -> None:
    page = open_as()
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    for path in (*MAIN_PAGES, "/ui/login"):
        answer = page.goto(node.addr + path)
        assert answer is not None, path
        headers = answer.all_headers()
        assert answer.status == 200, (path, answer.status)
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name, headers.get(name))
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        # No URL of the dashboard (ids, filters) is told to another site.
        assert headers["referrer-policy"] in STRICT_REFERRER, path
        assert headers["cache-control"] == "no-store", path
        page.wait_for_load_state("load")
    # The browser refused nothing: the pages need no inline script or style.
    assert refused == [], refused


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Serves one page: a form that posts itself to the node at once."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def attacker_site(host: str, html: str) -> Iterator[str]:
    """An HTTP server on `host` serving `html` at /; its origin."""
    handler = type("Handler", (_Attacker,), {"page": html.encode()})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _auto_post(action: str, fields: dict[str, str]) -> str:
    inputs = "".join(
        f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items()
    )
    return (
        "<!doctype html><html><body>"
        f'<form id="f" method="post" action="{action}">{inputs}</form>'
        "<script>document.getElementById('f').submit()</script>"
        "</body></html>"
    )


def _kill_fields(csrf: str = "") -> dict[str, str]:
    fields = {"by": "all", "confirm": "revoke everything", "reason": "pwned"}
    if csrf:
        fields["csrf"] = csrf
    return fields


@pytest.mark.parametrize(
    ("host", "with_csrf", "refusal"),
    [
        # Another site: the SameSite=Strict cookie is not even sent (no session: 401).
        ("127.0.0.2", False, 401),
        # The same site on another port: the cookie is sent, and even holding the
        # session's CSRF token (say, leaked) the Origin check refuses it (403).
        ("127.0.0.1", True, 403),
    ],
    ids=["cross-site", "cross-origin-with-leaked-csrf"],
)
def test_a_form_posted_from_another_origin_is_refused(
    open_as: OpenAs,
    node: Node,
    network: list[NetworkLog],
    host: str,
    with_csrf: bool,
    refusal: int,
) -> None:
    lease_id, token = node.lease(LEASED)
    victim = open_as()
    victim.goto(f"{node.addr}/ui/identities/{LEASED}")
    csrf = victim.locator("input[name=csrf]").first.get_attribute("value") or ""
    for action, fields in (
        (f"{node.addr}/ui/kill-switch", _kill_fields(csrf if with_csrf else "")),
        (
            f"{node.addr}/ui/leases/{lease_id}/revoke",
            {"confirm": "yes", "reason": "pwned", **({"csrf": csrf} if with_csrf else {})},
        ),
    ):
        with attacker_site(host, _auto_post(action, fields)) as origin:
            page = victim.context.new_page()
            # The signed-in browser's other tab visits the attacker; only that is allowed.
            network[-1].allowed.add(origin)
            with page.expect_response(lambda r: r.request.method == "POST") as posted:
                page.goto(origin + "/")
            answer = posted.value
            assert answer.status == refusal, (action, answer.status)
            page.close()
    # Nothing happened: the credential is live, the lease active, and nothing was revoked.
    assert node.active(token)
    assert node.lease_state(lease_id) == "active"
    revoked = [e for e in node.audit(limit=10_000) if e["action"].startswith("lease.revoke")]
    assert not [e for e in revoked if lease_id in str(e)], revoked


def test_no_request_of_the_main_pages_leaves_the_node(open_as: OpenAs, node: Node) -> None:
    page = open_as()
    seen: list[Any] = []
    # A lambda: Playwright cannot take a builtin method as a handler.
    page.on("request", lambda request: seen.append(request))  # noqa: PLW0108
    for path in MAIN_PAGES:
        page.goto(node.addr + path, wait_until="load")
    kinds = {r.resource_type for r in seen}
    # The pages did load their assets (from the node), and nothing else.
    assert {"document", "stylesheet", "script"} <= kinds, kinds
    foreign = [r.url for r in seen if not r.url.startswith(node.origin + "/")]
    assert foreign == [], foreign
