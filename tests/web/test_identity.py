"""The identity page and revoking a lease from it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.factories import estate_document
from tests.web.dash import dashboard, session_as
from tether.web._identity import usage_chart


def test_the_page_shows_what_justifies_the_identity(tmp_path: Path) -> None:
    doc = estate_document(8)
    with dashboard(tmp_path, doc) as (_, dash):
        page = dash.get("/ui/identities/nhi-00002")
        assert page.status_code == 200
        spec = next(i for i in doc["identities"] if i["id"] == "nhi-00002")
        for text in (spec["purpose"], spec["justification"], "team-a", "a-oncall@example.com"):
            assert text in page.text
        assert "Control profile (" + spec["kind"] + ")" in page.text
        assert "api-read" in page.text and "https://api.example.com" in page.text
        assert "/ui/lineage?identity=nhi-00002" in page.text


def test_usage_evidence_marks_used_and_unused_scopes(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        now = api.clock().isoformat().replace("+00:00", "Z")
        api.post(
            "/v1/usage",
            [
                {"identity": "nhi-00002", "at": now, "source": "gw", "scopes": ["read"]},
                {"identity": "nhi-00002", "at": now, "source": "gw", "scopes": ["read"]},
            ],
        )
        api.node.govern.flush()
        page = dash.get("/ui/identities/nhi-00002").text
        assert "2 uses in 30 days." in page
        unused = dash.get("/ui/identities/nhi-00004").text
        assert '<span class="bad">unused</span>' in unused


def test_the_usage_chart_has_a_bar_per_day() -> None:
    today = dt.date(2026, 12, 3)
    chart = usage_chart({today: 10, today - dt.timedelta(days=2): 5}, today)
    assert len(chart.bars) == 30
    assert chart.bars[-1].count == 10 and chart.bars[-3].count == 5
    assert chart.bars[-1].height == 2 * chart.bars[-3].height
    assert chart.bars[0].height == 0


def test_revoking_a_lease_from_the_page_kills_the_credential(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        task = api.task("nhi-00002")
        lease = api.get("/v1/leases", task=task["id"])["items"][0]["id"]
        page = dash.get("/ui/identities/nhi-00002").text
        assert f"/ui/leases/{lease}/revoke" in page
        confirm = dash.get(f"/ui/leases/{lease}/revoke")
        assert confirm.status_code == 200 and "Revoke lease" in confirm.text
        unconfirmed = dash.post(f"/ui/leases/{lease}/revoke", {"reason": "x"})
        assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.text
        assert api.get(f"/v1/leases/{lease}")["state"] == "active"
        done = dash.post(f"/ui/leases/{lease}/revoke", {"confirm": "yes", "reason": "leaked"})
        assert done.status_code == 303
        assert done.headers["location"].startswith("/ui/identities/nhi-00002?notice=")
        assert api.get(f"/v1/leases/{lease}")["state"] in ("revoking", "revoked")
        introspected = api.client.post(
            "/oauth2/introspect", data={"token": task["token"]}, headers=api.admin
        ).json()
        assert introspected["active"] is False
        entries = api.get("/v1/audit", limit=1000)["items"]
        revoked = [e for e in entries if e["action"] == "lease.revoke"]
        assert revoked and revoked[-1]["actor"].startswith("token:")
        assert "leaked" in str(revoked[-1])


def test_an_owner_reaches_only_its_own_identities_and_leases(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        other = api.task("nhi-00001")  # team-b's
        lease = api.get("/v1/leases", task=other["id"])["items"][0]["id"]
        owner = session_as(api, "owner:team-a")
        assert owner.get("/ui/identities/nhi-00002").status_code == 200
        assert owner.get("/ui/identities/nhi-00001").status_code == 404
        assert owner.get(f"/ui/leases/{lease}/revoke").status_code == 404
        owner.get("/ui/identities/nhi-00002")
        assert owner.post(f"/ui/leases/{lease}/revoke", {"confirm": "yes"}).status_code == 404
        assert api.get(f"/v1/leases/{lease}")["state"] == "active"
        mine = api.task("nhi-00002")
        my_lease = api.get("/v1/leases", task=mine["id"])["items"][0]["id"]
        assert owner.post(f"/ui/leases/{my_lease}/revoke", {"confirm": "yes"}).status_code == 303
        assert api.get(f"/v1/leases/{my_lease}")["state"] in ("revoking", "revoked")


def test_unknown_identities_and_leases_are_404(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (_, dash):
        assert dash.get("/ui/identities/nope").status_code == 404
        assert dash.get("/ui/leases/lse_00000000/revoke").status_code == 404
