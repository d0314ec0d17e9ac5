"""The overview: the estate at a glance. Identities by kind and status, active leases,
credentials issued and revoked per hour, open findings by OWASP NHI category and
severity, reviews due, exceptions expiring, alerts, trigger-to-dead times and the audit
chain's status. What is costly to count (a pass over the audit log) is kept in memory
and refreshed in the background; the page says how old it is."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from tether._internal.timeutil import parse_time
from tether.govern import FindingFilter
from tether.model import OWASP_NHI, RULES, SEVERITIES, Kind, LeaseState
from tether.store import AuditFilter, LeaseFilter
from tether.web._audit_pages import last_verification
from tether.web._cache import Refreshed, per_node
from tether.web._inventory import STATUSES, index_of, risk_of, select
from tether.web._inventory import Query as InventoryQuery
from tether.web._pages import Ctx, Pages

pages = Pages()

HOURS = 24
EXCEPTIONS_EXPIRING = dt.timedelta(days=14)
REVIEWS_DUE = dt.timedelta(days=7)
#: The trend and the trigger-to-dead times: how old they may be.
ACTIVITY_MAX_AGE = 30.0
REPORT_MAX_AGE = 300.0
REPORT_WINDOW = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class HourBar:
    hour: dt.datetime
    issued: int
    ended: int


def _activity(node: Any) -> tuple[dt.datetime, list[HourBar]]:
    now = node.clock()
    start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=HOURS - 1)
    with node.store.read() as tx:
        counts = tx.lease_activity(start)
    by_hour = {hour: (issued, ended) for hour, issued, ended in counts}
    bars = []
    for i in range(HOURS):
        hour = start + dt.timedelta(hours=i)
        issued, ended = by_hour.get(hour, (0, 0))
        bars.append(HourBar(hour, issued, ended))
    return now, bars


def _trigger_times(node: Any) -> tuple[dt.datetime, dict[str, Any]]:
    now = node.clock()
    report = node.govern.report("owasp-nhi", now - REPORT_WINDOW)
    return now, dict(report.get("trigger_to_dead", {}))


def _findings(ctx: Ctx) -> dict[str, dict[str, int]]:
    """Open findings: OWASP NHI category → severity → count."""
    table: dict[str, dict[str, int]] = {c: dict.fromkeys(SEVERITIES, 0) for c in OWASP_NHI}
    scope = ctx.principal.owner_scope()
    if scope is None:
        counted = [
            (RULES[rule], n)
            for (rule, state), n in ctx.node.govern.finding_counts().items()
            if state == "open" and rule in RULES
        ]
    else:
        found = ctx.node.govern.findings(FindingFilter(owner_in=scope, state="open", limit=10000))
        counted = [(RULES[f["rule"]], 1) for f in found]
    for rule, n in counted:
        for category in rule.owasp_nhi:
            row = table.setdefault(category, dict.fromkeys(SEVERITIES, 0))
            row[rule.severity.value] += n
    return table


def _active_leases(ctx: Ctx) -> int:
    scope = ctx.principal.owner_scope()
    with ctx.node.store.read() as tx:
        if scope is None:
            count: int = tx.count_leases(LeaseState.ACTIVE)
            return count
        return sum(
            len(
                tx.find_leases(
                    LeaseFilter(owner_id=owner, states=(LeaseState.ACTIVE,), limit=10000)
                )
            )
            for owner in scope
        )


@pages.view("/")
def overview(ctx: Ctx) -> Response:
    node, now = ctx.node, ctx.now()
    scope = ctx.principal.owner_scope()
    index = index_of(node)
    if scope is None:
        by_kind_status = Counter(index.by_kind_status)
    else:
        rows = select(index, risk_of(node), InventoryQuery(), scope)
        by_kind_status = Counter((r.kind, r.status) for r in rows)
    kinds = [k.value for k in Kind]
    activity: Refreshed[tuple[dt.datetime, list[HourBar]]] = per_node(
        node, "activity", lambda: Refreshed(lambda: _activity(node), ACTIVITY_MAX_AGE)
    )
    triggers: Refreshed[tuple[dt.datetime, dict[str, Any]]] = per_node(
        node, "triggers", lambda: Refreshed(lambda: _trigger_times(node), REPORT_MAX_AGE)
    )
    # Counted over every owner: admins' and auditors' to see.
    as_of, hours = activity.get() if scope is None else (now, [])
    peak = max((max(h.issued, h.ended) for h in hours), default=0)
    campaigns = node.govern.reviews.campaigns(scope)
    due = [
        c
        for c in campaigns
        if c.get("state") == "open" and c.get("due") and parse_time(c["due"]) <= now + REVIEWS_DUE
    ]
    expiring = [
        e
        for e in node.govern.exceptions.listing(scope, "active")
        if e.get("expires") and parse_time(e["expires"]) <= now + EXCEPTIONS_EXPIRING
    ]
    alerts: list[Any] = []
    if scope is None:  # alerts are audit entries: admins' and auditors' to read
        with node.store.read() as tx:
            alerts = tx.search_audit(
                AuditFilter(action="alert.", since=now - dt.timedelta(hours=24), limit=100)
            )
    return ctx.render(
        "overview.html",
        kinds=kinds,
        statuses=STATUSES,
        by_kind_status=by_kind_status,
        identities=sum(by_kind_status.values()),
        active_leases=_active_leases(ctx),
        hours=hours,
        activity_as_of=as_of,
        peak=peak,
        findings=_findings(ctx),
        categories=OWASP_NHI,
        severities=SEVERITIES,
        reviews_due=due,
        exceptions_expiring=expiring,
        alerts=alerts,
        alerts_pending=sum(node.alerts.pending().values()) if scope is None else None,
        triggers=triggers.peek() if scope is None else None,
        verification=last_verification(node) if scope is None else None,
    )
