"""The audit log and the evidence report, for admins and auditors: the log newest first,
filtered by actor, identity, action, result and time, every entry with its hash and its
predecessor's; a verification of the whole chain (the overview shows the last one); the
NDJSON export; and the evidence report on the page and as JSON or self-contained HTML.

Every read is the HTTP API's (`tether.api.routes._audit`, `_govern`): the same filter,
the same services, the same shapes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from tether.api._access import Who
from tether.api.routes._audit import AUDIT_FIELDS, InvalidAuditFilter, audit_filter
from tether.audit import jsonl_line, record_to_json
from tether.govern import InvalidUsage, parse_since
from tether.govern._html import render_report_html
from tether.model import AuditRecord
from tether.store import AuditFilter
from tether.web._cache import per_node
from tether.web._pages import Ctx, Pages, url

pages = Pages()

#: Entries on one page of the log.
PAGE = 100
#: The filters of the log page, as its form names them (and its links carry them).
FILTERS = tuple(f for f in AUDIT_FIELDS if not f.endswith("_seq"))
FRAMEWORKS = ("owasp-nhi", "nist-csf")
#: Audit entries linked under one number of the report before "… and N more".
REPORT_SEQS = 20
#: The report's sections, in its order, with the titles `tether report --format html` gives.
REPORT_SECTIONS = {
    "coverage": "Inventory coverage",
    "findings": "Findings",
    "reviews": "Access reviews",
    "exceptions": "Exceptions",
    "leases": "Credentials",
    "trigger_to_dead": "Trigger to dead credential",
    "keys": "Confidentiality keys",
}
_REPORT_HEAD = ("framework", "since", "generated_at", "audit_head")


# -- the last verification, per node (the overview shows it) --
def last_verification(node: Any) -> dict[str, Any] | None:
    """The last verification of `node`'s audit chain run from the dashboard, or None:
    `Verification.to_dict()` (ok, entries, head_hash, first_bad_seq, problem) with `at`
    (when it ran), `broken_at` (= first_bad_seq) and `reason` (= problem)."""
    found: dict[str, Any] | None = _held(node).get("last")
    return found


def _held(node: Any) -> dict[str, Any]:
    held: dict[str, Any] = per_node(node, "audit.verification", dict)
    return held


def _verify(ctx: Ctx) -> dict[str, Any]:
    result = ctx.node.verify_audit()
    shown = {
        **result.to_dict(),
        "at": ctx.now(),
        "broken_at": result.first_bad_seq,
        "reason": result.problem,
    }
    _held(ctx.node)["last"] = shown
    return shown


# -- the log --
def _entry(record: AuditRecord, shown: set[int]) -> dict[str, Any]:
    """An entry as the export has it, with where its predecessor is on the dashboard."""
    entry = record_to_json(record)
    prev = record.seq - 1
    if prev < 1:
        entry["prev_link"] = None
    elif prev in shown:
        entry["prev_link"] = f"#seq-{prev}"
    else:
        # The unfiltered page that starts with the predecessor.
        entry["prev_link"] = url("/audit", before_seq=record.seq) + f"#seq-{prev}"
    return entry


def _any(tx: Any, where: AuditFilter, **change: Any) -> bool:
    return bool(tx.search_audit(dataclasses.replace(where, limit=1, **change)))


@pages.view("/audit", Who.ADMIN, Who.AUDITOR)
def audit_log(ctx: Ctx) -> Response:
    query = {name: ctx.query.get(name, "").strip() for name in FILTERS}
    paging = {name: ctx.query.get(name, "") for name in ("before_seq", "after_seq")}
    newer_first = not paging["after_seq"].strip()
    try:
        where = audit_filter({**query, **paging}, newest_first=newer_first, limit=PAGE + 1)
    except InvalidAuditFilter as refused:
        return ctx.render(
            "audit.html", status=400, error=str(refused), query=query, entries=[], pager={}
        )
    with ctx.node.store.read() as tx:
        records = tx.search_audit(where)
        more = len(records) > PAGE
        records = records[:PAGE]
        if not newer_first:
            records.reverse()
        pager: dict[str, str] = {}
        if records:
            newest, oldest = records[0].seq, records[-1].seq
            unbounded = dataclasses.replace(where, before_seq=None, after_seq=None)
            older = more if newer_first else _any(tx, unbounded, before_seq=oldest)
            newer = (
                more
                if not newer_first
                else where.before_seq is not None
                and _any(tx, unbounded, after_seq=newest, newest_first=False)
            )
            if older:
                pager["older"] = url("/audit", **query, before_seq=oldest)
            if newer:
                pager["newer"] = url("/audit", **query, after_seq=newest)
        if where.before_seq is not None or where.after_seq is not None:
            pager["newest"] = url("/audit", **query)
    shown = {r.seq for r in records}
    return ctx.render(
        "audit.html",
        error=None,
        query=query,
        entries=[_entry(r, shown) for r in records],
        pager=pager,
    )


@pages.view("/audit/verify", Who.ADMIN, Who.AUDITOR)
def verify(ctx: Ctx) -> Response:
    """Check every entry's hash and link, now (a pass over the whole log)."""
    return ctx.render("audit_verify.html", result=_verify(ctx))


@pages.view("/audit/export", Who.ADMIN, Who.AUDITOR)
def export(ctx: Ctx) -> Response:
    """The whole log, one JSON object a line, streamed (GET /v1/audit/export's lines)."""

    def lines() -> Iterator[str]:
        for record in ctx.node.store.iter_audit():
            yield jsonl_line(record)

    name = f"tether-audit-{ctx.now().date().isoformat()}.jsonl"
    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


# -- the evidence report --
def _report_value(value: Any) -> Any:
    """The report's JSON with every `audit_entries` list as links to the entries."""
    if isinstance(value, Mapping):
        return {
            key: _seq_links(item) if key == "audit_entries" else _report_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_report_value(item) for item in value]
    return value


def _seq_links(value: Any) -> dict[str, Any]:
    seqs = sorted({s for s in value if isinstance(s, int)}) if isinstance(value, list) else []
    links = [(s, url("/audit", before_seq=s + 1) + f"#seq-{s}") for s in seqs[:REPORT_SEQS]]
    return {"__seqs__": links, "more": len(seqs) - len(links), "total": len(seqs)}


@pages.view("/reports/evidence", Who.ADMIN, Who.AUDITOR)
def evidence(ctx: Ctx) -> Response:
    """The evidence report (GET /v1/reports/evidence) on the page, or downloaded as its
    JSON or as the self-contained HTML file (whose inline style this page's CSP forbids:
    the page shows the report's JSON in its own tables instead)."""
    framework = ctx.query.get("framework", "").strip() or FRAMEWORKS[0]
    since = ctx.query.get("since", "").strip()
    form = ctx.query.get("format", "").strip()
    if framework not in FRAMEWORKS:
        raise InvalidUsage(f"framework: one of {', '.join(FRAMEWORKS)}")
    if form not in ("", "json", "html"):
        raise InvalidUsage("format: json or html")
    report: dict[str, Any] = ctx.node.govern.report(
        framework, parse_since(since or None, ctx.node.clock())
    )
    if form:
        name = f"tether-evidence-{framework}-{ctx.now().date().isoformat()}.{form}"
        headers = {"content-disposition": f'attachment; filename="{name}"'}
        if form == "html":
            return HTMLResponse(render_report_html(report), headers=headers)
        return JSONResponse(report, headers=headers)
    sections = [
        (key, title, _report_value(report[key]))
        for key, title in REPORT_SECTIONS.items()
        if key in report
    ]
    known = {*_REPORT_HEAD, *REPORT_SECTIONS}
    sections += [
        (key, key.replace("_", " ").capitalize(), _report_value(value))
        for key, value in report.items()
        if key not in known
    ]
    return ctx.render(
        "evidence.html",
        framework=framework,
        frameworks=FRAMEWORKS,
        since=since,
        report=report,
        sections=sections,
        downloads={
            fmt: url("/reports/evidence", framework=framework, since=since, format=fmt, download=1)
            for fmt in ("json", "html")
        },
    )
