"""One identity: its control profile, owner, vendor, approval and expiry, entitlements
with their usage evidence, live leases (each revocable behind a confirmation), findings
with evidence, risk and its parts, usage over time, and its audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from tether.api._access import Subject
from tether.audit import record_to_json
from tether.errors import NotFoundError
from tether.govern import FindingFilter, entitlement_evidence
from tether.govern._risk import CRITICALITY_FACTOR, SEVERITY_WEIGHT
from tether.lease import RevokeTarget
from tether.model import RULES, LeaseState, Severity
from tether.store import AuditFilter, LeaseFilter
from tether.web._pages import Ctx, Pages, url, visible_identity

pages = Pages()

#: How far back the usage chart and the entitlements' evidence look.
USAGE_DAYS = 30
LEASES_SHOWN = 100
AUDIT_SHOWN = 50
#: Leases that still stand for a credential (a revoking one may still work somewhere).
LIVE_STATES = (LeaseState.PENDING, LeaseState.ACTIVE, LeaseState.REVOKING)


@dataclass(frozen=True, slots=True)
class Bar:
    """One day of the usage chart, laid out (SVG user units)."""

    day: dt.date
    count: int
    x: float
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    peak: int
    width: int
    height: int
    bar_width: float


def usage_chart(counts: dict[dt.date, int], today: dt.date, days: int = USAGE_DAYS) -> Chart:
    """Daily use over the last `days` days as bars (a missing day is a zero)."""
    width, height, top = 720, 160, 10
    span = [today - dt.timedelta(days=days - 1 - i) for i in range(days)]
    peak = max((counts.get(d, 0) for d in span), default=0)
    slot = width / days
    bars = []
    for i, day in enumerate(span):
        count = counts.get(day, 0)
        bar = 0.0 if peak == 0 else (height - top - 20) * count / peak
        bars.append(Bar(day, count, i * slot + 2, height - 20 - bar, bar))
    return Chart(tuple(bars), peak, width, height, max(1.0, slot - 4))


def _entitlements(identity: Any, view: Any, rollups: Sequence[Any]) -> list[dict[str, Any]]:
    """Each entitlement with what it grants and what use of it was seen (the evidence a
    review item gives, tether.govern.entitlement_evidence)."""
    out = []
    for entitlement in identity.entitlements:
        profile = view.profiles.get(entitlement.profile_id)
        used = [r for r in rollups if r.entitlement == entitlement.profile_id]
        evidence = entitlement_evidence(entitlement, view.profiles, used)
        out.append(
            {
                "profile": entitlement.profile_id,
                "provider": profile.provider if profile else None,
                "target": profile.target if profile else None,
                "audience": profile.audience if profile else None,
                "granted": evidence.granted,
                "count": evidence.count,
                "last_seen": evidence.last_seen,
                "scopes_used": evidence.scopes_used,
                "unused": evidence.unused,
            }
        )
    return out


def _risk_parts(node: Any, identity: Any, findings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The score and what it is made of (tether.govern._risk documents the formula)."""
    risk = node.govern.risk([identity.id]).get(identity.id) or {
        "score": 0,
        "open_findings": 0,
        "blast_radius": None,
    }
    weights = [
        (f["id"], f["severity"], SEVERITY_WEIGHT[Severity(f["severity"])])
        for f in findings
        if f["state"] == "open"
    ]
    return {
        **risk,
        "weights": weights,
        "findings_weight": sum(w for _, _, w in weights),
        "criticality": identity.criticality.value,
        "criticality_factor": CRITICALITY_FACTOR[identity.criticality],
    }


@pages.view("/identities/{identity_id}", subject=Subject.IDENTITY)
def identity_page(ctx: Ctx) -> Response:
    node, identity_id = ctx.node, ctx.params["identity_id"]
    if identity_id not in node.view.current.identities:
        node.view.refresh_if_changed()  # applied a moment ago on another node
    view = node.view.current
    identity = visible_identity(ctx.principal, view, identity_id)
    today = ctx.now().date()
    since = today - dt.timedelta(days=USAGE_DAYS - 1)
    with node.store.read() as tx:
        rollups = tx.usage_for([identity_id], since)
        leases = tx.find_leases(
            LeaseFilter(identity_id=identity_id, states=LIVE_STATES, limit=LEASES_SHOWN)
        )
        # The audit log is admins' and auditors' (GET /v1/audit), as in the API.
        readers = ctx.principal.owner_scope() is None
        trail = (
            tx.search_audit(AuditFilter(identity_id=identity_id, limit=AUDIT_SHOWN))
            if readers
            else []
        )
    findings = node.govern.findings(FindingFilter(identity=identity_id, limit=200))
    findings.sort(key=lambda f: (f["state"] != "open", -SEVERITY_WEIGHT[Severity(f["severity"])]))
    daily: dict[dt.date, int] = {}
    for rollup in rollups:
        daily[rollup.day] = daily.get(rollup.day, 0) + rollup.count
    owner = view.owners.get(identity.owner_id)
    vendor = view.vendors.get(identity.vendor_id) if identity.vendor_id else None
    return ctx.render(
        "identity.html",
        identity=identity,
        control=view.control(identity.kind),
        owner=owner,
        vendor=vendor,
        entitlements=_entitlements(identity, view, rollups),
        leases=leases,
        findings=findings,
        rules=RULES,
        risk=_risk_parts(node, identity, findings),
        chart=usage_chart(daily, today),
        usage_total=sum(daily.values()),
        trail=[record_to_json(r) for r in trail] if readers else None,
        may_act=ctx.may_act_on(identity.owner_id),
    )


def _lease_of(ctx: Ctx) -> Any:
    with ctx.node.store.read() as tx:
        lease = tx.get_lease(ctx.params["lease_id"])
    if lease is None:
        raise NotFoundError(f"no lease {ctx.params['lease_id']!r}")
    return lease


@pages.view("/leases/{lease_id}/revoke", subject=Subject.LEASE)
def confirm_revoke(ctx: Ctx) -> Response:
    lease = _lease_of(ctx)
    return ctx.render("revoke.html", lease=lease, may_act=ctx.may_act_on(lease.owner_id))


@pages.action("/leases/{lease_id}/revoke", subject=Subject.LEASE)
def revoke(ctx: Ctx) -> Response:
    """Revoke one lease and everything derived from it (the kill switch's smallest
    target), as POST /v1/leases/revoke does; the subject rule kept owners to their own."""
    lease = _lease_of(ctx)
    reason = ctx.field("reason", 512) or "revoked from the dashboard"
    if ctx.field("confirm") != "yes":
        return ctx.render(
            "error.html",
            status=400,
            status_code=400,
            message="confirm: tick the box to confirm the revocation; nothing was revoked",
        )
    revoked = ctx.node.leases.revoke(RevokeTarget(lease_id=lease.id), reason, ctx.actor)
    ctx.node.worker.wake()
    return ctx.redirect(
        url(f"/identities/{lease.identity_id}"),
        notice=f"Revoked lease {lease.id} ({revoked} lease{'s' if revoked != 1 else ''} in all).",
    )
