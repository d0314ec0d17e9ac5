"""The audit log: read, verify, export, alerts, and the HMAC a value would have in it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute, text_response
from tether.api._schemas import HmacRequest
from tether.audit import jsonl_line, record_to_json

router = APIRouter(route_class=TetherRoute, tags=["audit"])

#: Sequence numbers and other integers in queries fit a signed 64-bit column.
MAX_SEQ = 2**63 - 1
_After = Annotated[int, Query(ge=0, le=MAX_SEQ)]
_Limit = Annotated[int, Query(ge=1, le=10000)]


@router.get("/v1/audit")
def list_audit(
    caller: Caller,
    node: Node,
    after: _After = 0,
    limit: _Limit = 100,
    identity: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    with node.store.read() as tx:
        records = tx.list_audit(after, limit, identity)
    return {"items": [record_to_json(r) for r in records]}


@router.get("/v1/audit/verify")
def verify_audit(caller: Caller, node: Node) -> dict[str, Any]:
    return node.verify_audit().to_dict()


@router.get(
    "/v1/audit/export",
    response_class=StreamingResponse,
    responses=text_response("application/x-ndjson", "The audit log, one JSON object a line"),
)
def export_audit(caller: Caller, node: Node) -> StreamingResponse:
    def lines() -> Iterator[str]:
        for record in node.store.iter_audit():
            yield (jsonl_line(record))

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/v1/alerts")
def list_alerts(
    caller: Caller, node: Node, after: _After = 0, limit: _Limit = 100
) -> dict[str, Any]:
    """Alerts (failed revocations, use of retired secrets ...): audit entries `alert.*`."""
    with node.store.read() as tx:
        records = tx.list_audit(after, limit, action_prefix="alert.")
    return {"items": [record_to_json(r) for r in records]}


@router.post("/v1/audit/hmac")
def audit_hmac(body: HmacRequest, caller: Caller, node: Node) -> dict[str, str]:
    """The HMAC a sensitive value would have in the log, to look for it there."""
    return {"hmac": node.audit.fingerprint(body.value)}
