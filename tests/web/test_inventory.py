"""The inventory: search, filters, sorting and paging on the server, within the
principal's owners, ids never shortened."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli.running import LONG_ID
from tests.factories import estate_document
from tests.web.dash import dashboard, session_as
from tether.web._inventory import PAGE_SIZE, forget_risk


def _ids(html: str) -> list[str]:
    return re.findall(r'<td class="id"><a href="/ui/identities/([^"]+)">', html)


def test_search_filters_and_sort_choose_the_rows(tmp_path: Path) -> None:
    doc = estate_document(12)
    doc["identities"][3]["id"] = LONG_ID
    doc["identities"][3]["purpose"] = "Settles the nightly ledger"
    with dashboard(tmp_path, doc) as (_, dash):
        everything = _ids(dash.get("/ui/identities").text)
        assert len(everything) == 12
        assert LONG_ID in everything  # the full id, as it is
        assert _ids(dash.get("/ui/identities", q="LEDGER").text) == [LONG_ID]
        prod = _ids(dash.get("/ui/identities", environment="prod").text)
        assert prod and all(i in {f"nhi-{n:05d}" for n in (0, 6, 9)} | {LONG_ID} for i in prod)
        team_b = _ids(dash.get("/ui/identities", owner="team-b").text)
        assert team_b == sorted(team_b) and len(team_b) == 6
        by_kind = dash.get("/ui/identities", kind="api_key").text
        assert "api_key" in by_kind and len(_ids(by_kind)) == len(
            [i for i in doc["identities"] if i["kind"] == "api_key"]
        )
        by_owner = _ids(dash.get("/ui/identities", sort="owner").text)
        owner_of = {i["id"]: i["owner"] for i in doc["identities"]}
        assert by_owner == sorted(owner_of, key=lambda i: (owner_of[i], i))


def test_risk_and_findings_filters_follow_the_stored_scores(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate_document(6)) as (api, dash):
        api.post("/v1/findings/evaluate")
        scores = {i: s for i, (s, _) in api.node.govern.risk_table().items() if s > 0}
        assert scores  # the small estate has an agent without intent, an identity without metadata
        forget_risk(api.node)  # rather than wait out the refresh
        assert sorted(_ids(dash.get("/ui/identities", findings="1").text)) == sorted(scores)
        risky = _ids(dash.get("/ui/identities", sort="risk").text)
        assert risky[: len(scores)] == sorted(scores, key=lambda i: (-scores[i], i))
        assert _ids(dash.get("/ui/identities", risk="75").text) == []


def test_pages_are_cut_on_the_server(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate_document(PAGE_SIZE + 7)) as (_, dash):
        first = dash.get("/ui/identities")
        assert len(_ids(first.text)) == PAGE_SIZE
        assert "page 1 of 2" in first.text
        second = dash.get("/ui/identities", page="2")
        assert len(_ids(second.text)) == 7
        assert not set(_ids(first.text)) & set(_ids(second.text))


def test_bad_filters_name_the_field(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (_, dash):
        for params, field in (
            ({"kind": "robot"}, "kind"),
            ({"sort": "name"}, "sort"),
            ({"page": "0"}, "page"),
            ({"risk": "x"}, "risk"),
        ):
            answer = dash.get("/ui/identities", **params)
            assert answer.status_code == 400
            assert f"{field}:" in answer.text or f"{field} " in answer.text


def test_an_owner_sees_only_its_own_identities(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        owner = session_as(api, "owner:team-a")
        shown = _ids(owner.get("/ui/identities").text)
        assert shown == ["nhi-00000", "nhi-00002", "nhi-00004", "nhi-00006"]
        assert _ids(owner.get("/ui/identities", owner="team-b").text) == []
        assert owner.get("/ui/identities/nhi-00001").status_code == 404
