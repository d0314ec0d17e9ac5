"""The audit log: read, verify, export, alerts, and the HMAC a value would have in it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from tether._internal.timeutil import InvalidValue, parse_time
from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute, text_response
from tether.api._schemas import HmacRequest
from tether.audit import AuditError, jsonl_line, record_to_json
from tether.store import AuditFilter

router = APIRouter(route_class=TetherRoute, tags=["audit"])

#: Sequence numbers and other integers in queries fit a signed 64-bit column.
MAX_SEQ = 2**63 - 1
_After = Annotated[int, Query(ge=0, le=MAX_SEQ)]
_Limit = Annotated[int, Query(ge=1, le=10000)]
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class InvalidAuditFilter(AuditError):
    """A filter of the audit log that cannot be read: the message names the field."""

    status_code = 400
    code = "invalid_filter"


def audit_time(field: str, value: str | None, *, end: bool = False) -> dt.datetime | None:
    """A `since`/`until` bound: an RFC 3339 time, or a date (its 00:00 UTC; as an `end`,
    the next day's, so that `until=2027-01-31` takes in all of that day). Empty: no bound."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        at = parse_time(text)
    except InvalidValue as exc:
        raise InvalidAuditFilter(f"{field}: {exc}") from None
    if end and _DAY.fullmatch(text):
        try:
            return at + dt.timedelta(days=1)
        except OverflowError:  # the last day there is: no bound
            return None
    return at


def audit_seq(field: str, value: int | str | None) -> int | None:
    """A sequence number bound (`before`/`after`); empty: no bound."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > MAX_SEQ:
        raise InvalidAuditFilter(f"{field}: expected a sequence number (a whole number >= 0)")
    return int(text)


#: The fields of an audit query, as the dashboard's form and links name them.
AUDIT_FIELDS = (
    "actor",
    "identity",
    "action",
    "result",
    "since",
    "until",
    "before_seq",
    "after_seq",
)


def audit_filter(
    fields: Mapping[str, int | str | None], *, newest_first: bool = True, limit: int = 100
) -> AuditFilter:
    """The audit entries a query asks for (this route's and the dashboard's), from its
    AUDIT_FIELDS: an empty field is no filter; one that cannot be read is refused, named."""

    def text(name: str) -> str | None:
        value = fields.get(name)
        return None if value is None else str(value).strip() or None

    return AuditFilter(
        actor=text("actor"),
        identity_id=text("identity"),
        action=text("action"),
        result=text("result"),
        since=audit_time("since", text("since")),
        until=audit_time("until", text("until"), end=True),
        before_seq=audit_seq("before_seq", text("before_seq")),
        after_seq=audit_seq("after_seq", text("after_seq")),
        newest_first=newest_first,
        limit=limit,
    )


@dataclass(frozen=True, slots=True)
class _AuditQuery:
    after: _After = 0
    limit: _Limit = 100
    identity: Annotated[str | None, Query(max_length=255)] = None
    actor: Annotated[str | None, Query(max_length=255)] = None
    action: Annotated[str | None, Query(max_length=64)] = None
    result: Annotated[str | None, Query(max_length=16)] = None
    since: Annotated[str | None, Query(max_length=40)] = None
    until: Annotated[str | None, Query(max_length=40)] = None
    before: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc"


@router.get("/v1/audit")
def list_audit(
    caller: Caller, node: Node, query: Annotated[_AuditQuery, Depends()]
) -> dict[str, Any]:
    """Entries after `after`, oldest first (`order=desc`: newest first, paging older with
    `before`). `action` is exact, or a prefix when it ends with "." or "*"; `since` is
    inclusive, `until` exclusive (a date: through the end of that day)."""
    fields = {
        "actor": query.actor,
        "identity": query.identity,
        "action": query.action,
        "result": query.result,
        "since": query.since,
        "until": query.until,
        "before_seq": query.before,
        "after_seq": query.after,
    }
    where = audit_filter(fields, newest_first=query.order == "desc", limit=query.limit)
    with node.store.read() as tx:
        records = tx.search_audit(where)
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
