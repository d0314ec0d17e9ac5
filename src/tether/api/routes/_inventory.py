"""The inventory of identities, as the caller's token may see it. An `encryption_key`
identity's record lists its keys (name, type, latest version, escrowed): their metadata
from the key service, never material."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute
from tether.api._schemas import page
from tether.estate import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN
from tether.govern import FindingFilter
from tether.model import Kind
from tether.store import IdentityFilter

router = APIRouter(route_class=TetherRoute, tags=["inventory"])


@dataclass(frozen=True, slots=True)
class _IdentityQuery:
    kind: Kind | None = None
    owner: Annotated[str | None, Query(max_length=255)] = None
    environment: Annotated[str | None, Query(max_length=64)] = None
    status: Annotated[str | None, Query(pattern="^(active|suspended|retired)$")] = None
    after: Annotated[str | None, Query(max_length=255)] = None
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000
    #: `risk`: highest risk first (one page: the `limit` riskiest that match).
    sort: Annotated[str | None, Query(pattern="^(id|risk)$")] = None


@router.get("/v1/identities")
def list_identities(
    caller: Caller, node: Node, query: Annotated[_IdentityQuery, Depends()]
) -> dict[str, Any]:
    where = IdentityFilter(
        kind=None if query.kind is None else query.kind.value,
        owner_id=query.owner,
        environment=query.environment,
        status=query.status,
        owner_in=caller.owner_scope(),
        after_id=query.after,
        limit=query.limit,
    )
    if query.sort == "risk":
        riskiest = _riskiest(node, where)
        _with_keys(node, riskiest)
        return {"items": riskiest, "next": None}
    items = [i.to_spec() for i in node.estate.list_identities(where)]
    risk = node.govern.risk(i["id"] for i in items)
    for item in items:
        item["risk"] = risk.get(item["id"], {}).get("score", 0)
    _with_keys(node, items)
    return page(items, query.limit)


def _with_keys(node: Any, items: list[dict[str, Any]]) -> None:
    """Each encryption_key identity's keys, in its record (one read for the page)."""
    owners = {i["id"] for i in items if i.get("kind") == Kind.ENCRYPTION_KEY.value}
    if not owners:
        return
    keys: dict[str, list[dict[str, Any]]] = {}
    for key in node.keys.summaries(owners):
        keys.setdefault(key["identity"], []).append(
            {k: key[k] for k in ("name", "type", "latest_version", "escrowed")}
        )
    for item in items:
        if item["id"] in owners:
            item["keys"] = keys.get(item["id"], [])


def _riskiest(node: Any, where: IdentityFilter) -> list[dict[str, Any]]:
    view = node.view.current
    out: list[dict[str, Any]] = []
    for identity_id, score in node.govern.risk_ranking():
        identity = view.identities.get(identity_id)
        if identity is None or not _matches(identity, where):
            continue
        out.append({**identity.to_spec(), "risk": score})
        if len(out) == where.limit:
            break
    return out


def _matches(identity: Any, where: IdentityFilter) -> bool:
    # The identity's owner now (the ranking's stored owner may predate a hand-over).
    return (
        (where.owner_in is None or identity.owner_id in where.owner_in)
        and (where.kind is None or identity.kind.value == where.kind)
        and (where.owner_id is None or identity.owner_id == where.owner_id)
        and (where.environment is None or identity.environment == where.environment)
        and (where.status is None or identity.status.value == where.status)
    )


@router.get("/v1/identities/{identity_id}")
def show_identity(
    identity_id: Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH)],
    caller: Caller,
    node: Node,
) -> dict[str, Any]:
    shown = node.estate.get_identity(identity_id, caller.owner_scope())
    risk = node.govern.risk([identity_id]).get(identity_id)
    open_findings = node.govern.findings(FindingFilter(identity=identity_id, state="open"))
    shown = dict(shown)
    _with_keys(node, [shown])
    return {
        **shown,
        "risk": risk or {"score": 0, "open_findings": 0, "blast_radius": None},
        "findings": [
            {"id": f["id"], "rule": f["rule"], "severity": f["severity"]} for f in open_findings
        ],
    }
