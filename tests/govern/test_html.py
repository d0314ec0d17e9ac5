"""The HTML evidence report: self-contained, escaped, and every number with its sources."""

from __future__ import annotations

import datetime as dt
import json
import re
from html.parser import HTMLParser
from typing import Any

from tether.estate._view import load_view
from tether.govern._html import render_report_html
from tether.govern._report import build_report
from tether.model import AuditRecord
from tether.store import open_store

HOSTILE = '<script>alert("x")</script>&"\'><img src=https://evil.example/x.png>'


def _report() -> dict[str, Any]:
    return {
        "framework": "owasp-nhi",
        "since": "2026-11-01T00:00:00Z",
        "generated_at": "2026-12-02T12:00:00Z",
        "audit_head": {"seq": 987, "hash": "ab" * 32},
        "coverage": {
            "identities": 41,
            "fields": {
                "owner": {"count": 40, "share": 0.9756, "audit_entries": [3]},
                "purpose": {"count": 37, "share": 0.9024, "audit_entries": [3]},
                "justification": {"count": 33, "share": 0.8049, "audit_entries": [3]},
                "approval": {"count": 29, "share": 0.7073, "audit_entries": [3]},
                "attestation": {"count": 17, "share": 0.4146, "audit_entries": [3]},
            },
        },
        "findings": {
            "total": 19,
            "by_rule": [
                {
                    "rule": "orphaned",
                    "title": "Owner departed " + HOSTILE,
                    "severity": "high",
                    "owasp_nhi": ["NHI1"],
                    "nist_csf": ["GV.RR-02", "PR.AA-01"],
                    "open": 7,
                    "excepted": 2,
                    "resolved": 5,
                    "oldest_open_age_s": 86461.5,
                    # More than the list shows: the total is named.
                    "audit_entries": list(range(100, 180)),
                },
                {
                    "rule": "dormant",
                    "title": "Dormant identity",
                    "severity": "medium",
                    "owasp_nhi": ["NHI5"],
                    "nist_csf": ["PR.AA-05"],
                    "open": 4,
                    "excepted": 0,
                    "resolved": 1,
                    "oldest_open_age_s": None,
                    "audit_entries": [201, 202, 203],
                },
            ],
            "by_severity": {"critical": 0, "high": 7, "medium": 4, "low": 0},
            "by_control": {"NHI1": 7, "NHI5": 4},
        },
        "reviews": {
            "campaigns": 3,
            "completed": 2,
            "items": 58,
            "decided": 51,
            "by_decision": {"keep": 44, "narrow": 3, "revoke": 2, "escalate": 2},
            "audit_entries": [301, 302, 303],
        },
        "exceptions": {"active": 6, "expired": 8, "audit_entries": [401, 402]},
        "leases": {"issued": 1234, "revoked": 321, "expired": 654, "audit_entries": [501]},
        "trigger_to_dead": {
            "task_end": {"count": 12, "median_s": 0.412, "max_s": 2.75, "audit_entries": [601]},
            "approval_expiry": {"count": 1, "median_s": 31.0, "max_s": 31.0, "audit_entries": [9]},
            "vendor_end": {"count": 0, "median_s": None, "max_s": None, "audit_entries": []},
            "owner_departed": {"count": 2, "median_s": 4.5, "max_s": 7.25, "audit_entries": [7]},
            "retirement": {"count": 0, "median_s": None, "max_s": None, "audit_entries": []},
            "exposure": {"count": 3, "median_s": 600.125, "max_s": 3601.0, "audit_entries": [8]},
            "kill_switch": {"count": 0, "median_s": None, "max_s": None, "audit_entries": []},
        },
        # Something the renderer does not know: still shown, still escaped.
        "orphans": [{"identity": HOSTILE, "reason": "owner left " + HOSTILE, "age_s": 4242}],
    }


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    parser.close()
    return parser


def _numbers(value: Any) -> list[int | float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for k, v in value.items() if k != "audit_entries" for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_hostile_strings_are_escaped() -> None:
    page = render_report_html(_report())
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    parsed = _parse(page)
    assert all(tag not in ("script", "img", "iframe") for tag, _ in parsed.tags)
    # The text survives, as text: an auditor sees what was written.
    text = "".join(parsed.text)
    assert HOSTILE in text
    assert "owner left " + HOSTILE in text


def test_charts_are_inline_svg() -> None:
    page = render_report_html(_report())
    parsed = _parse(page)
    titles = [t for t in parsed.text if t.startswith(("Findings by", "Trigger to", "Coverage"))]
    assert {"Findings by rule and state", "Trigger to dead: median and max (s)"} <= set(titles)
    assert any(t.startswith("Coverage") for t in titles)
    svgs = [a for tag, a in parsed.tags if tag == "svg"]
    assert len(svgs) >= 4  # coverage, findings by rule, by severity, trigger to dead
    rects = [a for tag, a in parsed.tags if tag == "rect"]
    assert {"open", "excepted", "resolved", "median", "max", "share"} <= {
        a.get("class") for a in rects
    }


def test_nothing_is_fetched() -> None:
    page = render_report_html(_report())
    parsed = _parse(page)
    for _tag, attrs in parsed.tags:
        for name in ("src", "href", "action", "xlink:href", "srcset", "data"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http://", "https://", "//")), (name, value)
    # Inside any tag (text is escaped, so a "<" in the page always opens a real tag).
    in_tag = r"""<[^<>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//"""
    assert not re.search(in_tag, page, re.IGNORECASE)
    assert "url(" not in page and "@import" not in page
    # And the browser is told so, should anything slip through.
    csp = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv")]
    assert csp
    assert "default-src 'none'" in (csp[0].get("content") or "")


def test_every_number_is_on_the_page() -> None:
    report = _report()
    page = render_report_html(report)
    text = "".join(_parse(page).text)
    numbers = _numbers(report)
    assert len(numbers) > 50
    for number in numbers:
        assert str(number) in text, number
    assert report["audit_head"]["hash"] in text


def test_numbers_carry_their_audit_entries() -> None:
    page = render_report_html(_report())
    parsed = _parse(page)
    cells = {a.get("title") for tag, a in parsed.tags if tag == "td" and a.get("class") == "n"}
    # The 80 entries of one rule: truncated, with the total.
    assert any(t and t.startswith("audit entries: 100, 101") and "(80 total)" in t for t in cells)
    assert "audit entries: 301, 302, 303" in cells
    assert "audit entries: 601" in cells
    text = "".join(parsed.text)
    # The lists under the tables go further than the tooltips, and say what they leave out.
    assert "149 … and 30 more (80 total)" in text
    # Severity counts name the entries of the rules behind them.
    assert "audit entries: 201, 202, 203" in cells
    assert "no audit entries" in cells  # vendor_end: no sample


def test_a_sparse_report_still_renders() -> None:
    page = render_report_html({"framework": "nist-csf", "findings": {"total": 0}})
    assert page.startswith("<!DOCTYPE html>")
    assert "nothing to chart" in page


def test_the_report_tether_builds_renders_whole() -> None:
    """The renderer against `build_report`'s real output, not only the documented shape."""
    now = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)
    details = {"finding": "f1", "rule": "orphaned", "severity": "high", "owasp_nhi": ["NHI1"]}

    def entry(seq: int, action: str, identity: str, more: dict[str, Any]) -> AuditRecord:
        return AuditRecord(
            seq=seq,
            ts=now - dt.timedelta(hours=10 - seq),
            action=action,
            actor="system:govern",
            result="alert",
            identity_id=identity,
            owner_id=None,
            task_id=None,
            reason=None,
            justification=None,
            details=json.dumps(more),
            prev_hash="",
            hash=f"h{seq}",
        )

    records = [
        entry(4, "finding.open", HOSTILE, details),
        entry(7, "finding.open", "svc-b", {**details, "finding": "f2"}),
        entry(9, "finding.resolve", "svc-b", {**details, "finding": "f2"}),
    ]
    store = open_store("memory://")
    store.migrate()
    report = build_report(
        records,
        load_view(store),
        framework="owasp-nhi",
        since=now - dt.timedelta(days=30),
        now=now,
    )
    page = render_report_html(report)
    parsed = _parse(page)
    text = "".join(parsed.text)
    for number in _numbers(report):
        assert str(number) in text, number
    titles = {a.get("title") for tag, a in parsed.tags if tag == "td"}
    assert "audit entries: 4, 7, 9" in titles
    assert "<script" not in page
