"""The overview: the counts a team decides from, within the principal's owners."""

from __future__ import annotations

import re
from pathlib import Path

from tests.factories import estate_document
from tests.web.dash import dashboard, session_as


def _cell(html: str, label: str) -> str:
    found = re.search(rf'aria-label="{re.escape(label)}">([\d,]+)<', html)
    return found.group(1) if found else "0"


def test_counts_by_kind_and_status_and_active_leases(tmp_path: Path) -> None:
    doc = estate_document(16)
    with dashboard(tmp_path, doc) as (api, dash):
        api.task("nhi-00002")
        api.task("nhi-00004")
        page = dash.get("/ui/").text
        kinds: dict[str, int] = {}
        for identity in doc["identities"]:
            kinds[identity["kind"]] = kinds.get(identity["kind"], 0) + 1
        for kind, count in kinds.items():
            assert _cell(page, f"{count} active {kind}") == str(count)
        assert re.search(r'id="h-leases">Active leases</h2>\s*<p class="big">2</p>', page)
        assert "2 issued" in page or ">2<" in page


def test_open_findings_by_owasp_category(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate_document(6)) as (api, dash):
        api.post("/v1/findings/evaluate")
        findings = api.get("/v1/findings", state="open")["items"]
        assert findings
        page = dash.get("/ui/").text
        for finding in findings:
            for category in finding["owasp_nhi"]:
                label = f"findings in {category}"
                assert label in page


def test_an_owner_counts_only_its_own(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate_document(8)) as (api, _):
        owner = session_as(api, "owner:team-a")
        page = owner.get("/ui/").text
        assert re.search(r'<p class="big"><a href="/ui/identities">4</a></p>', page)
        assert "The audit log is for admins and auditors." in page
        assert "Trigger to dead" not in page


def test_the_trend_counts_issued_and_ended_credentials_per_hour(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        task = api.task("nhi-00002")
        api.post(f"/v1/tasks/{task['id']}/end")
        with api.node.store.read() as tx:
            hours = tx.lease_activity(api.clock().replace(minute=0, second=0, microsecond=0))
        assert sum(h[1] for h in hours) >= 1
        assert sum(h[2] for h in hours) >= 1
        page = dash.get("/ui/").text
        assert re.search(r"Blue: issued \((\d+)\)", page)
