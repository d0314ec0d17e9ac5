"""Sign-in, the session cookie and CSRF: the token never reaches the browser, the session
has exactly the token's roles and ends with it, and a form from elsewhere changes nothing."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.web.dash import Dash, dashboard, session_as
from tether.web import CONTENT_SECURITY_POLICY


def test_sign_in_sets_a_session_cookie_that_does_not_hold_the_token(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        browser = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
        answer = browser.sign_in(api.root)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here; __Host- and Secure under TLS
        assert api.root not in cookie
        page = browser.get("/ui/")
        assert page.status_code == 200
        assert api.root not in page.text
        entries = api.get("/v1/audit", limit=1000)["items"]
        assert any(e["action"] == "web.sign_in" for e in entries)
        assert not any(api.root in str(e) for e in entries)


def test_a_wrong_token_is_refused_with_its_reason_and_no_cookie(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        browser = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
        answer = browser.sign_in("tth_not-a-token")
        assert answer.status_code == 401
        assert "malformed" in answer.text
        assert "tether_session" not in answer.headers.get("set-cookie", "")


def test_tokens_for_programs_do_not_open_the_dashboard(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        browser = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
        token = api.post("/v1/tokens", {"name": "gw", "roles": ["introspect"]})["token"]
        answer = browser.sign_in(token)
        assert answer.status_code == 401
        assert "introspect" in answer.text


def test_sign_in_needs_the_forms_own_csrf_token(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        browser = TestClient(api.client.app, base_url="http://127.0.0.1")
        answer = browser.post(
            "/ui/login", data={"csrf": "x", "token": api.root}, follow_redirects=False
        )
        assert answer.status_code == 401
        assert "tether_session" not in answer.headers.get("set-cookie", "")


def test_revoking_the_token_ends_the_session(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        created = api.post("/v1/tokens", {"name": "aud", "roles": ["auditor"]})
        browser = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
        assert browser.sign_in(created["token"]).status_code == 303
        assert browser.get("/ui/identities").status_code == 200
        api.call("DELETE", f"/v1/tokens/{created['id']}")
        api.node.auth.forget_cached()
        answer = browser.get("/ui/identities")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/ui/login?next=/ui/identities")


def test_signed_out_pages_send_to_sign_in_and_back_only_to_the_dashboard(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        browser = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
        assert browser.get("/ui/identities").headers["location"] == "/ui/login?next=/ui/identities"
        page = browser.get("/ui/login", next="https://evil.example/")
        assert "evil.example" not in page.text
        answer = browser.sign_in(api.root)
        assert answer.headers["location"] == "/ui/"


def test_sign_out_ends_the_session_in_this_browser(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (_, dash):
        dash.get("/ui/")
        answer = dash.post("/ui/logout")
        assert answer.status_code == 303
        assert dash.get("/ui/").status_code == 303


def test_a_post_without_the_csrf_token_or_from_another_origin_changes_nothing(
    tmp_path: Path,
) -> None:
    with dashboard(tmp_path) as (api, dash):
        task = api.task("nhi-00000")
        dash.get("/ui/")
        lease = api.get("/v1/leases", task=task["id"])["items"][0]["id"]
        no_token = dash.client.post(
            f"/ui/leases/{lease}/revoke", data={"confirm": "yes"}, follow_redirects=False
        )
        assert no_token.status_code == 403
        other_origin = dash.post(
            f"/ui/leases/{lease}/revoke",
            {"confirm": "yes"},
            headers={"origin": "https://evil.example"},
        )
        assert other_origin.status_code == 403
        assert api.get(f"/v1/leases/{lease}")["state"] == "active"


def test_every_page_carries_the_security_headers(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (_, dash):
        for path in ("/ui/login", "/ui/", "/ui/identities", "/ui/no-such-page"):
            headers = dash.get(path).headers
            assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            assert headers["cache-control"] == "no-store"


def test_the_auditor_cannot_post_even_with_a_valid_csrf_token(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        task = api.task("nhi-00000")
        lease = api.get("/v1/leases", task=task["id"])["items"][0]["id"]
        auditor = session_as(api, "auditor")
        page = auditor.get("/ui/identities/nhi-00000")
        assert page.status_code == 200
        assert "Revoke" not in page.text
        forged = auditor.post(f"/ui/leases/{lease}/revoke", {"confirm": "yes"})
        assert forged.status_code == 403
        assert api.get(f"/v1/leases/{lease}")["state"] == "active"


def test_a_sealed_node_answers_the_dashboard_with_a_page_that_says_so(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        api.post("/v1/sys/seal")
        answer = dash.get("/ui/identities")
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("text/html")
        assert "Tether is sealed" in answer.text and "tether unseal" in answer.text
        assert "nhi-0000" not in answer.text


def test_signing_out_ends_the_session_for_a_copied_cookie_too(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        copy = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
        copy.client.cookies.set("tether_session", dash.client.cookies["tether_session"], path="/ui")
        assert copy.get("/ui/").status_code == 200
        dash.get("/ui/")
        assert dash.post("/ui/logout").status_code == 303
        assert copy.get("/ui/").status_code == 303  # sent to sign in
        signed_out = [
            e for e in api.get("/v1/audit", limit=1000)["items"] if e["action"] == "web.sign_out"
        ]
        assert len(signed_out) == 1
        # Signing in again is a new session.
        assert copy.sign_in(api.root).status_code == 303
        assert copy.get("/ui/").status_code == 200


def test_a_notice_shows_only_from_this_sessions_own_redirect(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        task = api.task("nhi-00002")
        lease = api.get("/v1/leases", task=task["id"])["items"][0]["id"]
        dash.get("/ui/")
        done = dash.post(f"/ui/leases/{lease}/revoke", {"confirm": "yes"})
        shown = dash.get(done.headers["location"])
        assert f"Revoked lease {lease}" in shown.text
        forged = dash.get("/ui/", notice="Session expired: paste your token at evil.example")
        assert "evil.example" not in forged.text
        other = session_as(api, "auditor")
        assert f"Revoked lease {lease}" not in other.get(done.headers["location"]).text
