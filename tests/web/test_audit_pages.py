"""The Audit pages: the log filtered and paged, hashes as the export has them, the chain
verified (and found broken after a row is edited in the database), the export, the
evidence report on the page and downloaded; admins and auditors only."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape

from tests.web.dash import Dash, dashboard, session_as
from tether.web import _audit_pages
from tether.web._audit_pages import last_verification

_ROW = re.compile(r'<tr id="seq-(\d+)">(.*?)</tr>', re.S)
_HASH = re.compile(r"<code class=\"audit-hash\" data-hash>([0-9a-f]{64})</code>")
_PREV = re.compile(r"<code class=\"audit-hash\" data-prev-hash>([0-9a-f]{64})</code>")


def _rows(page: str) -> dict[int, str]:
    """The entries a page of the log shows, by seq, in page order."""
    return {int(seq): row for seq, row in _ROW.findall(page)}


def _seqs(dash: Dash, **query: Any) -> list[int]:
    response = dash.get("/ui/audit", **query)
    assert response.status_code == 200, response.text
    return list(_rows(response.text))


def _follow(dash: Dash, href: str) -> httpx.Response:
    """Open a link of a page (its query as parameters: `Dash.get` sends its own)."""
    parts = urllib.parse.urlsplit(html.unescape(href))
    return dash.get(parts.path, **dict(urllib.parse.parse_qsl(parts.query)))


def _export(dash: Dash) -> list[dict[str, Any]]:
    response = dash.get("/ui/audit/export")
    assert response.status_code == 200
    return [json.loads(line) for line in response.text.splitlines()]


def _api_seqs(api: Any, **query: Any) -> list[int]:
    return [e["seq"] for e in api.get("/v1/audit", order="desc", limit=10000, **query)["items"]]


def test_filters_find_the_sign_in_and_an_api_change(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        (sign_in,) = api.get("/v1/audit", action="web.sign_in")["items"]
        assert sign_in["actor"].startswith("token:")
        api.task("nhi-00000")
        by_identity = _api_seqs(api, identity="nhi-00000")
        assert by_identity, "the task's start names its identity"
        # The admin's own change on it (the join token; the task's start is the task's).
        latest = api.get(
            "/v1/audit", identity="nhi-00000", actor=sign_in["actor"], order="desc", limit=1
        )["items"][0]

        # By actor: the sign-in, and the admin's API changes, all by the same token.
        mine = _seqs(dash, actor=sign_in["actor"])
        assert sign_in["seq"] in mine and latest["seq"] in mine
        assert mine == _api_seqs(api, actor=sign_in["actor"])
        assert _seqs(dash, actor="token:nobody") == []
        # By action: exact, and as a prefix.
        assert _seqs(dash, action="web.sign_in") == [sign_in["seq"]]
        assert _seqs(dash, action="web.") == [sign_in["seq"]]
        assert _seqs(dash, action="web.sign") == []
        assert latest["seq"] in _seqs(dash, action=latest["action"])
        # By identity: what the API lists for it, newest first, each linked to its page.
        page = dash.get("/ui/audit", identity="nhi-00000").text
        assert list(_rows(page)) == by_identity
        assert 'href="/ui/identities/nhi-00000"' in page
        # Combined with the result.
        assert _seqs(dash, identity="nhi-00000", result="ok") == [
            s for s in by_identity if s in _api_seqs(api, result="ok")
        ]
        # The page names the actor and the action of the entry it shows.
        row = _rows(dash.get("/ui/audit", action="web.sign_in").text)[sign_in["seq"]]
        assert html.escape(sign_in["actor"]) in row and "web.sign_in" in row


def test_time_filters_take_dates_and_times(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        before = _seqs(dash)
        later = api.clock.advance(days=3)
        assert dash.sign_in(api.root).status_code == 303  # the session ended meanwhile
        api.task("nhi-00001")
        after = _api_seqs(api, since=later.isoformat())
        assert after and set(after).isdisjoint(before)
        assert _seqs(dash, since=later.isoformat().replace("+00:00", "Z")) == after
        # A date as `until` takes in that whole day; `since` a date starts at its midnight.
        first_day = (later - dt.timedelta(days=3)).date().isoformat()
        assert _seqs(dash, until=first_day) == before
        assert _seqs(dash, since=later.date().isoformat()) == after
        assert _seqs(dash, since=first_day, until=first_day) == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2027-13-01"}, "until"),
        ({"since": "2027-01-31T12:00:00"}, "since"),  # no offset
        ({"before_seq": "ten"}, "before_seq"),
        ({"after_seq": "-1"}, "after_seq"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_field(
    tmp_path: Path, query: dict[str, str], field: str
) -> None:
    with dashboard(tmp_path) as (api, dash):
        response = dash.get("/ui/audit", **query)
        assert response.status_code == 400
        assert f"Not filtered: {field}:" in response.text
        assert _rows(response.text) == {}  # nothing else happens: no entries shown
        # The API refuses the same time the same way.
        if field in ("since", "until"):
            refused = api.call("GET", "/v1/audit", params=query)
            assert refused.status_code == 400 and field in refused.text


def test_pages_older_and_newer_and_every_entry_links_its_predecessor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_audit_pages, "PAGE", 5)
    with dashboard(tmp_path) as (_, dash):
        total = len(_export(dash))
        seen: list[int] = []
        pages: list[str] = []
        page = dash.get("/ui/audit").text
        while True:
            pages.append(page)
            seen += list(_rows(page))
            older = re.search(r'<a href="([^"]+)" rel="next">Older entries</a>', page)
            if older is None or len(pages) > total:
                break
            page = _follow(dash, older.group(1)).text
        assert seen == list(range(total, 0, -1))
        assert "Newer entries" not in pages[0]
        # Back up from the oldest page: newer pages, each newest first.
        back: list[int] = []
        page = pages[-1]
        while newer := re.search(r'<a href="([^"]+)" rel="prev">Newer entries</a>', page):
            page = _follow(dash, newer.group(1)).text
            assert len(back) <= total
            back = list(_rows(page)) + back
        assert back + list(_rows(pages[-1])) == seen
        # The predecessor: on the same page by its anchor, else the page that starts with it.
        first = _rows(pages[0])
        top = max(first)
        assert f'href="#seq-{top - 1}"' in first[top]
        bottom = min(first)
        link = f'href="/ui/audit?before_seq={bottom}#seq-{bottom - 1}"'
        assert link in first[bottom]
        target = dash.get("/ui/audit", before_seq=str(bottom)).text
        assert next(iter(_rows(target))) == bottom - 1
        assert "the chain's start" in _rows(pages[-1])[1]


def test_the_hashes_shown_are_the_exports(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        api.task("nhi-00000")
        exported = {e["seq"]: e for e in _export(dash)}
        rows = _rows(dash.get("/ui/audit").text)
        assert list(rows) == sorted(exported, reverse=True)
        for seq, row in rows.items():
            assert _HASH.findall(row) == [exported[seq]["hash"]]
            assert _PREV.findall(row) == [exported[seq]["prev_hash"]]
            # The details as the export has them, escaped.
            assert str(escape(exported[seq]["details"])) in row


def test_verify_shows_verified_and_a_tampered_entry_breaks_it(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        assert last_verification(api.node) is None
        exported = _export(dash)
        page = dash.get("/ui/audit/verify")
        assert page.status_code == 200
        status = re.search(r'<p class="verdict ok" role="status">(.*?)</p>', page.text, re.S)
        assert status is not None
        assert f"Verified: {len(exported)} entries" in status.group(1)
        assert exported[-1]["hash"] in status.group(1)
        held = last_verification(api.node)
        assert held is not None and held["ok"] and held["entries"] == len(exported)
        assert held["at"] == api.clock()

        # Edit one entry's details behind the node's back.
        with sqlite3.connect(tmp_path / "t.db") as db:
            db.execute("UPDATE audit_log SET details = ? WHERE seq = 5", ('{"edited":true}',))
        page = dash.get("/ui/audit/verify")
        status = re.search(r'<p class="verdict bad" role="status">(.*?)</p>', page.text, re.S)
        assert status is not None
        assert "Broken at entry 5: entry 5 was modified" in status.group(1)
        held = last_verification(api.node)
        assert held is not None and not held["ok"] and held["broken_at"] == 5
        assert held["first_bad_seq"] == 5 and "modified" in held["reason"]
        assert 'href="/ui/audit?before_seq=6#seq-5"' in page.text


def test_export_downloads_every_entry(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        response = dash.get("/ui/audit/export")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        day = api.clock().date().isoformat()
        assert (
            response.headers["content-disposition"]
            == f'attachment; filename="tether-audit-{day}.jsonl"'
        )
        lines = response.text.splitlines()
        # The same lines as the API's export, every entry from the first to the head.
        from_api = api.client.get("/v1/audit/export", headers=api.admin).text.splitlines()
        assert lines == from_api
        seqs = [json.loads(line)["seq"] for line in lines]
        assert seqs == list(range(1, len(seqs) + 1))
        with api.node.store.read() as tx:
            assert tx.audit_head()[0] == len(seqs)


def test_evidence_report_on_the_page_and_downloaded(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, dash):
        page = dash.get("/ui/reports/evidence")
        assert page.status_code == 200
        assert "Inventory coverage" in page.text and "Trigger to dead credential" in page.text
        # Readable under the page's CSP: nothing inline.
        assert "<style" not in page.text and 'style="' not in page.text
        report = api.get("/v1/reports/evidence")
        assert report["audit_head"]["hash"] in page.text
        # A number's audit entries link to them in the log.
        coverage_seq = report["coverage"]["fields"]["owner"]["audit_entries"][0]
        assert f'href="/ui/audit?before_seq={coverage_seq + 1}#seq-{coverage_seq}"' in page.text

        nist = dash.get("/ui/reports/evidence", framework="nist-csf", since="2020-01-01")
        assert nist.status_code == 200 and "nist-csf" in nist.text

        as_json = dash.get(
            "/ui/reports/evidence", framework="nist-csf", format="json", download="1"
        )
        assert as_json.status_code == 200
        assert as_json.headers["content-type"].startswith("application/json")
        assert as_json.headers["content-disposition"].startswith("attachment; filename=")
        assert as_json.headers["content-disposition"].endswith('.json"')
        assert as_json.json()["framework"] == "nist-csf"

        as_html = dash.get("/ui/reports/evidence", format="html", download="1")
        assert as_html.status_code == 200
        assert as_html.headers["content-type"].startswith("text/html")
        assert as_html.headers["content-disposition"].endswith('.html"')
        assert "<style>" in as_html.text and "Tether evidence report (owasp-nhi)" in as_html.text

        for query, field in (({"framework": "iso"}, "framework"), ({"since": "soon"}, "since")):
            refused = dash.get("/ui/reports/evidence", **query)
            assert 400 <= refused.status_code < 500 and field in refused.text


def test_admins_and_auditors_only(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        owner = session_as(api, "owner:team-a")
        auditor = session_as(api, "auditor")
        paths = ("/ui/audit", "/ui/audit/verify", "/ui/audit/export", "/ui/reports/evidence")
        for path in paths:
            assert owner.get(path).status_code == 403, path
            assert auditor.get(path).status_code == 200, path
        page = auditor.get("/ui/audit").text
        assert "<form" in page and 'method="post" action="/ui/audit' not in page
        # The auditor's own sign-in is there, under its own actor.
        (entry,) = api.get("/v1/audit", action="web.sign_in", order="desc", limit=1)["items"]
        assert str(entry["seq"]) in page


def test_the_api_filters_the_same_way(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (api, _):
        oldest_first = api.get("/v1/audit", limit=3)["items"]
        assert [e["seq"] for e in oldest_first] == [1, 2, 3]
        assert [e["seq"] for e in api.get("/v1/audit", after=2, limit=2)["items"]] == [3, 4]
        newest = api.get("/v1/audit", order="desc", limit=2)["items"]
        head = newest[0]["seq"]
        assert [e["seq"] for e in newest] == [head, head - 1]
        assert [e["seq"] for e in api.get("/v1/audit", order="desc", before=3)["items"]] == [2, 1]
        assert api.get("/v1/audit", action="sys.")["items"][0]["action"] == "sys.init"
        assert api.call("GET", "/v1/audit", params={"order": "sideways"}).status_code == 422
