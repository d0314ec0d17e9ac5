"""Work queues: findings (assign, except), exceptions (approve, revoke), access reviews
(start, decide), the kill switch, alerts and discovery.

Every change is the service call of the API route for the same job, made with the
signed-in principal as the actor, so it is audited as theirs; what an owner may do is
what its token may do over HTTP (the service or the same check as the route refuses).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import Response

from tether._internal.timeutil import InvalidValue, parse_time
from tether.api._access import Who, may_revoke
from tether.auth import Forbidden
from tether.errors import TetherError
from tether.govern import FindingFilter, InvalidReview, Reviewer, ReviewScope
from tether.govern._outbox import ALERT, PENDING
from tether.lease import RevokeTarget
from tether.model import RULES, SEVERITIES, Criticality, Kind
from tether.store import AuditFilter, GovernFilter
from tether.web._pages import BASE, Ctx, Pages, url

pages = Pages()

PAGE_SIZE = 50
MAX_PAGE = 500
FINDING_STATES = ("open", "excepted", "resolved")
EXCEPTION_STATES = ("requested", "active", "expired", "revoked")
#: The kill switch's targets, and the longest name each takes (as POST /v1/leases/revoke).
KILL_TARGETS = {"task": 64, "identity": 255, "owner": 255, "all": 0}
#: The rules whose findings are what discovery found (leaked and unmanaged secrets).
FOUND_BY_SCANNERS = ("shadow-nhi", "leaked")
_READERS_ONLY = (Who.ADMIN, Who.AUDITOR)


class BadInput(TetherError):
    """A form field that cannot be taken; the message names it and nothing changed."""

    status_code = 400
    code = "bad_input"


def _choice(ctx: Ctx, name: str, allowed: Sequence[str], default: str = "") -> str:
    value = ctx.query.get(name, default).strip()
    if value and value not in allowed:
        raise BadInput(f"{name}: must be one of {', '.join(allowed)}")
    return value


def _limit(ctx: Ctx) -> int:
    raw = ctx.query.get("limit", "").strip()
    if not raw:
        return PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadInput(f"limit: a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _text(ctx: Ctx, name: str, limit: int = 255) -> str:
    value = ctx.query.get(name, "").strip()
    if len(value) > limit:
        raise BadInput(f"{name}: at most {limit} characters")
    return value


def _back(ctx: Ctx, page: str) -> str:
    """Where a form goes after its change: the page (and filters) it was sent from."""
    back = ctx.field("back", 2048)
    start = BASE + page
    same_page = back.startswith(start) and back[len(start) : len(start) + 1] in ("", "?")
    if same_page and "\\" not in back and "//" not in back:
        return back
    return url(page)


def _owners(ctx: Ctx) -> list[str]:
    owned = ctx.principal.owner_scope()
    return sorted(ctx.node.view.current.owners if owned is None else owned)


def _evidence(evidence: Any) -> list[tuple[str, str]]:
    """A finding's evidence as short (key, value) lines; lists show their first items."""
    if not isinstance(evidence, Mapping):
        return [("evidence", str(evidence))] if evidence else []
    out: list[tuple[str, str]] = []
    for key, value in evidence.items():
        if isinstance(value, list):
            shown = [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in value[:5]]
            more = f" (+{len(value) - 5} more)" if len(value) > 5 else ""
            out.append((str(key), ", ".join(shown) + more))
        elif isinstance(value, Mapping):
            out.append((str(key), json.dumps(value, sort_keys=True)))
        else:
            out.append((str(key), "—" if value is None else str(value)))
    return out[:8]


def _seen(value: Any) -> dt.datetime | str | None:
    """A stored time to the second, for the `when` filter (as it was, if it is not one)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value).replace(microsecond=0)
    except InvalidValue:
        return value


# -- findings --
@pages.view("/findings")
def findings(ctx: Ctx) -> Response:
    state = _choice(ctx, "state", (*FINDING_STATES, "any"), "open")
    rule = _choice(ctx, "rule", tuple(RULES))
    severity = _choice(ctx, "severity", SEVERITIES)
    args = {
        "rule": rule,
        "severity": severity,
        "state": state,
        "owner": _text(ctx, "owner"),
        "identity": _text(ctx, "identity"),
        "assignee": _text(ctx, "assignee"),
    }
    unassigned = ctx.query.get("unassigned", "") == "1"
    limit = _limit(ctx)
    after = _text(ctx, "after", 64)
    items = ctx.node.govern.findings(
        FindingFilter(
            rule=rule or None,
            severity=severity or None,
            owner=args["owner"] or None,
            state=None if state == "any" else state,
            identity=args["identity"] or None,
            owner_in=ctx.principal.owner_scope(),
            assignee="" if unassigned else (args["assignee"] or None),
            after=after or None,
            limit=limit,
        )
    )
    next_after = items[-1]["id"] if len(items) == limit else None
    here = url("/findings", **args, unassigned="1" if unassigned else "", after=after)
    return ctx.render(
        "findings.html",
        items=items,
        args={**args, "unassigned": "1" if unassigned else ""},
        after=after,
        next_after=next_after,
        limit=limit,
        here=here,
        rules=sorted(RULES),
        states=FINDING_STATES,
        severities=SEVERITIES,
        owners=_owners(ctx),
        evidence=_evidence,
        seen=_seen,
        default_expiry=(ctx.now() + dt.timedelta(days=30)).date().isoformat(),
        tomorrow=(ctx.now() + dt.timedelta(days=1)).date().isoformat(),
    )


@pages.action("/findings/{finding_id}/assign")
def assign_finding(ctx: Ctx) -> Response:
    if "assignee" not in ctx.form:
        raise BadInput("assignee: give who works on it (empty to unassign)")
    shown = ctx.node.govern.assign(
        ctx.params["finding_id"],
        ctx.field("assignee"),
        ctx.actor,
        ctx.principal.write_scope(),
    )
    to = (shown.get("assignee") or {}).get("to")
    notice = f"Finding {shown['id']} " + (f"assigned to {to}." if to else "unassigned.")
    return ctx.redirect(_back(ctx, "/findings"), notice=notice)


@pages.action("/exceptions")
def request_exception(ctx: Ctx) -> Response:
    """POST /v1/exceptions: owners only for their own identities."""
    identity_id = ctx.field("identity", 255)
    scope = ctx.principal.write_scope()
    if scope is not None:
        identity = ctx.node.view.current.identities.get(identity_id)
        if identity is None or identity.owner_id not in scope:
            raise Forbidden(f"identity {identity_id} is not one of this token's owners'")
    body = {
        "rule": ctx.field("rule", 64),
        "identity": identity_id,
        "compensating_control": ctx.field("compensating_control"),
        "expires": ctx.field("expires", 40),
        "scope": ctx.field("scope") or None,
        "reason": ctx.field("reason") or None,
    }
    spec = ctx.node.govern.exceptions.request(body, ctx.actor)
    return ctx.redirect(
        _back(ctx, "/findings"),
        notice=f"Exception {spec['id']} requested for {spec['rule']} on {spec['identity']};"
        " another principal approves it.",
    )


# -- exceptions --
@pages.view("/exceptions")
def exceptions(ctx: Ctx) -> Response:
    state = _choice(ctx, "state", EXCEPTION_STATES)
    items = ctx.node.govern.exceptions.listing(ctx.principal.owner_scope(), state or None)
    items = sorted(items, key=lambda e: (str(e.get("requested_at") or ""), str(e.get("id"))))
    return ctx.render(
        "exceptions.html",
        items=list(reversed(items)),
        state=state,
        states=EXCEPTION_STATES,
        here=url("/exceptions", state=state),
        seen=_seen,
    )


@pages.action("/exceptions/{exception_id}/approve", Who.ADMIN)
def approve_exception(ctx: Ctx) -> Response:
    spec = ctx.node.govern.exceptions.approve(ctx.params["exception_id"], ctx.actor)
    return ctx.redirect(
        _back(ctx, "/exceptions"),
        notice=f"Exception {spec['id']} approved; it covers {spec['rule']} on"
        f" {spec['identity']} until {spec['expires']}.",
    )


@pages.action("/exceptions/{exception_id}/revoke", Who.ADMIN)
def revoke_exception(ctx: Ctx) -> Response:
    spec = ctx.node.govern.exceptions.revoke(ctx.params["exception_id"], ctx.actor)
    return ctx.redirect(_back(ctx, "/exceptions"), notice=f"Exception {spec['id']} revoked.")


# -- reviews --
@pages.view("/reviews")
def reviews(ctx: Ctx) -> Response:
    campaigns = ctx.node.govern.reviews.campaigns(ctx.principal.owner_scope())
    campaigns = sorted(campaigns, key=lambda c: str(c.get("created_at", "")), reverse=True)
    return ctx.render(
        "reviews.html",
        campaigns=campaigns,
        owners=_owners(ctx),
        kinds=[k.value for k in Kind],
        criticalities=[c.value for c in Criticality],
        seen=_seen,
    )


@pages.action("/reviews", Who.ADMIN)
def start_review(ctx: Ctx) -> Response:
    """POST /v1/reviews: exactly one of owner, kind or criticality (the service says so)."""
    due = ctx.field("due", 40)
    if due:
        try:
            due_at = parse_time(due)
        except InvalidValue as exc:
            raise InvalidReview(f"due: {exc}") from None
    else:
        due_at = None
    scope = ReviewScope(
        owner=ctx.field("owner", 255) or None,
        kind=ctx.field("kind", 32) or None,
        criticality=ctx.field("criticality", 16) or None,
    )
    campaign = ctx.node.govern.reviews.start(
        scope, due_at, ctx.field("default", 16) or "revoke", ctx.actor
    )
    return ctx.redirect(
        url(f"/reviews/{campaign['id']}"),
        notice=f"Review {campaign['id']} started with {campaign['items']} items.",
    )


@pages.view("/reviews/{campaign_id}")
def review(ctx: Ctx) -> Response:
    campaign = ctx.node.govern.reviews.show(ctx.params["campaign_id"], ctx.principal.owner_scope())
    entries = sorted(campaign["entries"], key=lambda e: (e["identity"], e["profile"]))
    return ctx.render("review.html", campaign=campaign, entries=entries, seen=_seen)


@pages.action("/reviews/items/{item_id}/decide")
def decide_review(ctx: Ctx) -> Response:
    """POST /v1/reviews/items/{item_id}/decide: owners decide their identities' items."""
    decision = ctx.field("decision", 16)
    scopes: list[str] | None = None
    if decision == "narrow":
        scopes = [s for s in ctx.form.get("scopes", "").split("\n") if s.strip()]
    reviewer = Reviewer(ctx.actor, None if ctx.principal.is_admin else ctx.principal.owned())
    spec = ctx.node.govern.reviews.decide(
        ctx.params["item_id"], decision, reviewer, scopes, ctx.field("reason") or None
    )
    return ctx.redirect(
        url(f"/reviews/{spec['campaign']}"),
        notice=f"{spec['identity']} / {spec['profile']}: {decision}.",
    )


# -- the kill switch --
def _expected(by: str, target: str) -> str:
    return "revoke everything" if by == "all" else f"revoke {target}"


@pages.view("/kill-switch", Who.ADMIN, Who.OWNER)
def kill_switch(ctx: Ctx) -> Response:
    by = _choice(ctx, "by", tuple(KILL_TARGETS))
    target = _text(ctx, "target", 255)
    if by and by != "all" and len(target) > KILL_TARGETS[by]:
        raise BadInput(f"target: at most {KILL_TARGETS[by]} characters")
    ready = by == "all" or bool(by and target)
    refusal = None
    if ready:
        try:  # the confirmation is offered only for what this principal may revoke
            may_revoke(ctx.node, ctx.principal, _revoke_target(by, target))
        except Forbidden as exc:
            ready, refusal = False, str(exc)
    return ctx.render(
        "kill_switch.html",
        by=by,
        target="" if by == "all" else target,
        ready=ready,
        refusal=refusal,
        expected=_expected(by, target) if ready else "",
        owners=_owners(ctx),
        targets=list(KILL_TARGETS) if ctx.principal.is_admin else ["owner", "identity", "task"],
    )


def _revoke_target(by: str, target: str) -> RevokeTarget:
    return RevokeTarget(
        task_id=target if by == "task" else None,
        identity_id=target if by == "identity" else None,
        owner_id=target if by == "owner" else None,
        everything=by == "all",
    )


@pages.action("/kill-switch", Who.ADMIN, Who.OWNER)
def kill(ctx: Ctx) -> Response:
    """POST /v1/leases/revoke (the same `may_revoke`), with a typed confirmation."""
    by = ctx.field("by", 16)
    if by not in KILL_TARGETS:
        raise BadInput(f"by: must be one of {', '.join(KILL_TARGETS)}")
    target = "" if by == "all" else ctx.field("target", 1024)
    if by != "all" and not target:
        raise BadInput(f"target: name the {by} to revoke")
    if by != "all" and len(target) > KILL_TARGETS[by]:
        raise BadInput(f"target: at most {KILL_TARGETS[by]} characters")
    reason = ctx.field("reason", 1024)
    if not reason or len(reason) > 500:
        raise BadInput("reason: say why, in at most 500 characters")
    expected = _expected(by, target)
    if ctx.field("confirm", 1024) != expected:
        raise BadInput(f"confirm: type {expected!r} to confirm")
    revoke = _revoke_target(by, target)
    may_revoke(ctx.node, ctx.principal, revoke)
    revoked = ctx.node.leases.revoke(revoke, reason, ctx.actor)
    ctx.node.worker.wake()
    what = "everything" if by == "all" else f"{by} {target}"
    plural = "" if revoked == 1 else "s"
    return ctx.redirect(url("/kill-switch"), notice=f"Revoked {revoked} lease{plural} of {what}.")


# -- alerts --
@pages.view("/alerts", *_READERS_ONLY)
def alerts(ctx: Ctx) -> Response:
    """GET /v1/alerts, newest first; and the findings' alerts waiting for delivery."""
    limit = _limit(ctx)
    before_raw = _text(ctx, "before", 20)
    if before_raw and not before_raw.isdigit():
        raise BadInput("before: a sequence number")
    before = int(before_raw) if before_raw else None
    with ctx.node.store.read() as tx:
        entries = tx.search_audit(AuditFilter(action="alert.", before_seq=before, limit=limit))
        pending = tx.list_govern(GovernFilter(type=ALERT, states=(PENDING,), limit=PAGE_SIZE))
    older = entries[-1].seq if len(entries) == limit else None
    return ctx.render(
        "alerts.html",
        entries=[_entry(e) for e in entries],
        older=older,
        before=before_raw,
        limit=limit,
        pending=[_pending(r) for r in pending],
        pending_counts=sorted(ctx.node.alerts.pending().items()),
        seen=_seen,
    )


def _entry(record: Any) -> dict[str, Any]:
    try:
        details = json.loads(record.details) if record.details else {}
    except ValueError:
        details = {}
    return {
        "seq": record.seq,
        "ts": record.ts,
        "action": record.action,
        "actor": record.actor,
        "result": record.result,
        "identity": record.identity_id,
        "owner": record.owner_id,
        "reason": record.reason,
        "details": _evidence(details),
    }


def _pending(record: Any) -> dict[str, Any]:
    alert = record.spec.get("alert", {})
    return {
        "id": record.id,
        "sink": record.group_id,
        "type": alert.get("type"),
        "finding": alert.get("finding"),
        "rule": alert.get("rule"),
        "severity": alert.get("severity"),
        "identity": alert.get("identity"),
        "attempts": record.spec.get("attempts", 0),
        "next_attempt_at": record.spec.get("next_attempt_at"),
        "last_error": record.spec.get("last_error"),
    }


# -- discovery --
@pages.view("/discovery", *_READERS_ONLY)
def discovery(ctx: Ctx) -> Response:
    """What scanners found: unmanaged and leaked secrets (findings), and GET
    /v1/reports/migration (every static secret, managed or not, riskiest first)."""
    state = _choice(ctx, "state", (*FINDING_STATES, "any"), "open")
    found = {
        rule: ctx.node.govern.findings(
            FindingFilter(rule=rule, state=None if state == "any" else state, limit=MAX_PAGE)
        )
        for rule in FOUND_BY_SCANNERS
    }
    return ctx.render(
        "discovery.html",
        shadow=found["shadow-nhi"],
        leaked=found["leaked"],
        migration=ctx.node.govern.migration(),
        state=state,
        states=FINDING_STATES,
        limit=MAX_PAGE,
        evidence=_evidence,
        seen=_seen,
    )
