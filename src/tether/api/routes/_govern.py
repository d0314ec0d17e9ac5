"""Governance: usage evidence in; findings, reviews, exceptions and reports out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tether._internal.timeutil import InvalidValue, parse_time
from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute
from tether.api._schemas import page
from tether.auth import Forbidden
from tether.estate import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN
from tether.govern import (
    FindingFilter,
    InvalidReview,
    InvalidUsage,
    Reviewer,
    ReviewScope,
    UnknownGovernObject,
    parse_since,
)
from tether.govern._html import render_report_html
from tether.govern._sinks import sink_key_from

router = APIRouter(route_class=TetherRoute, tags=["governance"])

_RULE = "^[a-z][a-z0-9-]{0,63}$"
_STATE = "^(open|resolved|excepted)$"
_SEVERITY = "^(low|medium|high|critical)$"
IdentityId = Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH)]
ObjectId = Annotated[str, Path(pattern="^[a-z]{3}_[0-9a-f]{8,40}$", max_length=64)]


# -- usage --
@router.post("/v1/usage")
async def post_usage(request: Request, caller: Caller, node: Node) -> dict[str, Any]:
    """Usage evidence: a JSON array, or JSON lines, of
    `{identity | credential_fingerprint, at, source, user_agent?, action?, resource?, scopes?}`.
    Each line is taken or rejected on its own: `{accepted, rejected: [{index, error}]}`."""
    raw = await request.body()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidUsage("(body): must be UTF-8 JSON") from None
    lines = _usage_lines(text)
    result: dict[str, Any] = await _in_thread(node.govern.ingest, lines)
    return result


def _usage_lines(text: str) -> list[Any]:
    stripped = text.strip()
    if not stripped:
        raise InvalidUsage("(body): give a JSON array or JSON lines of usage records")
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidUsage(f"(body): not JSON: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(parsed, list):
            raise InvalidUsage("(body): must be a JSON array or JSON lines")
        return parsed
    out: list[Any] = []
    for line in stripped.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            # Kept in place (as None), so the rejection names this line's index.
            out.append(None)
    return out


async def _in_thread(function: Any, *args: Any) -> Any:
    return await run_in_threadpool(function, *args)


# -- findings --
@dataclass(frozen=True, slots=True)
class _FindingQuery:
    rule: Annotated[str | None, Query(pattern=_RULE)] = None
    identity: Annotated[str | None, Query(max_length=SAFE_ID_MAX_LENGTH)] = None
    state: Annotated[str | None, Query(pattern=_STATE)] = None
    owner: Annotated[str | None, Query(max_length=255)] = None
    severity: Annotated[str | None, Query(pattern=_SEVERITY)] = None
    assignee: Annotated[str | None, Query(max_length=255)] = None
    after: Annotated[str | None, Query(max_length=64)] = None
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000


def _filter(query: _FindingQuery, caller: Caller, identity: str | None = None) -> FindingFilter:
    return FindingFilter(
        rule=query.rule,
        severity=query.severity,
        owner=query.owner,
        state=query.state,
        identity=identity or query.identity,
        owner_in=caller.owner_scope(),
        assignee=query.assignee,
        after=query.after,
        limit=query.limit,
    )


@router.get("/v1/findings")
def list_findings(
    caller: Caller, node: Node, query: Annotated[_FindingQuery, Depends()]
) -> dict[str, Any]:
    return page(node.govern.findings(_filter(query, caller)), query.limit)


@router.get("/v1/identities/{identity_id}/findings")
def identity_findings(
    identity_id: IdentityId,
    caller: Caller,
    node: Node,
    query: Annotated[_FindingQuery, Depends()],
) -> dict[str, Any]:
    node.estate.get_identity(identity_id, caller.owner_scope())  # 404 for what it may not see
    items = node.govern.findings(_filter(query, caller, identity_id))
    risk = node.govern.risk([identity_id]).get(identity_id)
    return {**page(items, query.limit), "risk": risk}


@router.post("/v1/findings/evaluate")
def evaluate_findings(caller: Caller, node: Node) -> dict[str, Any]:
    """Evaluate the whole estate now (it is also evaluated continuously)."""
    return node.govern.evaluate_now().to_dict()


class FindingAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Who works on it (e.g. a person's email); "" takes it out of every queue.
    assignee: str = Field(max_length=1024)


@router.post("/v1/findings/{finding_id}/assign")
def assign_finding(
    finding_id: ObjectId, body: FindingAssign, caller: Caller, node: Node
) -> dict[str, Any]:
    """Assign a finding (admins, or the owner of its identity); audited `finding.assign`."""
    return node.govern.assign(finding_id, body.assignee, caller.actor, caller.write_scope())


# -- reviews --
class ReviewStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str | None = Field(default=None, max_length=255)
    kind: str | None = Field(default=None, max_length=32)
    criticality: str | None = Field(default=None, max_length=16)
    due: str | None = Field(default=None, max_length=40)
    default: str = Field(default="revoke", max_length=16)


class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: str = Field(max_length=16)
    scopes: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None, max_length=256
    )
    reason: str | None = Field(default=None, max_length=1024)


@router.post("/v1/reviews", status_code=201)
def start_review(body: ReviewStart, caller: Caller, node: Node) -> dict[str, Any]:
    due = None
    if body.due is not None:
        try:
            due = parse_time(body.due)
        except InvalidValue as exc:
            raise InvalidReview(f"due: {exc}") from None
    scope = ReviewScope(owner=body.owner, kind=body.kind, criticality=body.criticality)
    return node.govern.reviews.start(scope, due, body.default, caller.actor)


@router.get("/v1/reviews")
def list_reviews(caller: Caller, node: Node) -> dict[str, Any]:
    return {"items": node.govern.reviews.campaigns(caller.owner_scope())}


@router.get("/v1/reviews/{campaign_id}")
def show_review(campaign_id: ObjectId, caller: Caller, node: Node) -> dict[str, Any]:
    return node.govern.reviews.show(campaign_id, caller.owner_scope())


@router.get("/v1/reviews/{campaign_id}/export")
def export_review(campaign_id: ObjectId, caller: Caller, node: Node) -> dict[str, Any]:
    """The estate change that makes the file agree with the decisions taken."""
    changes = node.govern.reviews.export(campaign_id, caller.owner_scope())
    return {"campaign": campaign_id, "changes": changes}


@router.post("/v1/reviews/items/{item_id}/decide")
def decide_review(
    item_id: ObjectId, body: ReviewDecision, caller: Caller, node: Node
) -> dict[str, Any]:
    reviewer = Reviewer(caller.actor, None if caller.is_admin else caller.owned())
    return node.govern.reviews.decide(item_id, body.decision, reviewer, body.scopes, body.reason)


# -- exceptions --
class ExceptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rule: str = Field(max_length=64)
    identity: str = Field(max_length=SAFE_ID_MAX_LENGTH)
    compensating_control: str = Field(max_length=512)
    expires: str = Field(max_length=40)
    scope: str | None = Field(default=None, max_length=512)
    reason: str | None = Field(default=None, max_length=512)


@router.get("/v1/exceptions")
def list_exceptions(
    caller: Caller,
    node: Node,
    state: Annotated[str | None, Query(pattern="^(requested|active|expired|revoked)$")] = None,
) -> dict[str, Any]:
    return {"items": node.govern.exceptions.listing(caller.owner_scope(), state)}


@router.post("/v1/exceptions", status_code=201)
def request_exception(body: ExceptionRequest, caller: Caller, node: Node) -> dict[str, Any]:
    scope = caller.write_scope()
    if scope is not None:
        identity = node.view.current.identities.get(body.identity)
        if identity is None or identity.owner_id not in scope:
            raise Forbidden(f"identity {body.identity} is not one of this token's owners'")
    return node.govern.exceptions.request(body.model_dump(), caller.actor)


@router.post("/v1/exceptions/{exception_id}/approve")
def approve_exception(exception_id: ObjectId, caller: Caller, node: Node) -> dict[str, Any]:
    return node.govern.exceptions.approve(exception_id, caller.actor)


@router.post("/v1/exceptions/{exception_id}/revoke")
def revoke_exception(exception_id: ObjectId, caller: Caller, node: Node) -> dict[str, Any]:
    return node.govern.exceptions.revoke(exception_id, caller.actor)


# -- reports --
_REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The evidence report: JSON, or a self-contained HTML page",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/html": {"schema": {"type": "string"}},
        },
    }
}


@router.get("/v1/reports/evidence", response_model=None, responses=_REPORT_RESPONSES)
def evidence_report(
    caller: Caller,
    node: Node,
    framework: Annotated[str, Query(pattern="^(owasp-nhi|nist-csf)$")] = "owasp-nhi",
    since: Annotated[str | None, Query(max_length=40)] = None,
    format: Annotated[str, Query(pattern="^(json|html)$")] = "json",
) -> JSONResponse | HTMLResponse:
    report = node.govern.report(framework, parse_since(since, node.clock()))
    if format == "html":
        return HTMLResponse(render_report_html(report))
    return JSONResponse(report)


@router.get("/v1/reports/migration")
def migration_report(caller: Caller, node: Node) -> dict[str, Any]:
    return {"items": node.govern.migration()}


# -- alert sinks --
@router.get("/v1/sinks/{sink_id}/key")
def sink_key(
    sink_id: Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH)],
    caller: Caller,
    node: Node,
) -> JSONResponse:
    """The HMAC key a webhook receiver verifies `X-Tether-Signature` with (admins only)."""
    declared = {s.get("id") for s in node.view.current.governance.sinks}
    if sink_id not in declared:
        raise UnknownGovernObject(f"no sink {sink_id!r} in governance.sinks")
    key = sink_key_from(node.barrier.token_key, sink_id)
    return JSONResponse(
        {"sink": sink_id, "algorithm": "HMAC-SHA256", "key": key.hex()},
        headers={"Cache-Control": "no-store"},
    )
