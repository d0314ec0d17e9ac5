"""Leases: list, show, renew, and revocation (the kill switch included)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from tether.api._access import may_revoke
from tether.api._deps import Caller, Node, TaskOrApiToken, optional_duration
from tether.api._oauth_errors import OAuthError
from tether.api._routing import TetherRoute
from tether.api._schemas import RenewRequest, RevokeRequest, lease_json, page
from tether.auth import Forbidden
from tether.errors import NotFoundError
from tether.lease import RevokeTarget
from tether.model import LeaseState
from tether.store import LeaseFilter

router = APIRouter(route_class=TetherRoute, tags=["leases"])


@dataclass(frozen=True, slots=True)
class _LeaseQuery:
    task: Annotated[str | None, Query(max_length=64)] = None
    identity: Annotated[str | None, Query(max_length=255)] = None
    owner: Annotated[str | None, Query(max_length=255)] = None
    state: Annotated[str | None, Query(pattern="^(pending|active|revoking|revoked|expired)$")] = (
        None
    )
    after: Annotated[str | None, Query(max_length=64)] = None
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000


@router.get("/v1/leases")
def list_leases(
    caller: Caller, node: Node, query: Annotated[_LeaseQuery, Depends()]
) -> dict[str, Any]:
    owner, scope = query.owner, caller.owner_scope()
    if scope is not None:
        if owner is not None and owner not in scope:
            return {"items": [], "next": None}
        owner = owner or (scope[0] if len(scope) == 1 else None)
        if owner is None:
            raise Forbidden("name the owner to list its leases")
    where = LeaseFilter(
        task_id=query.task,
        identity_id=query.identity,
        owner_id=owner,
        states=tuple(LeaseState) if query.state is None else (LeaseState(query.state),),
        after_id=query.after,
        limit=query.limit,
    )
    with node.store.read() as tx:
        leases = tx.find_leases(where)
    return page([lease_json(lease) for lease in leases], query.limit)


@router.get("/v1/leases/{lease_id}")
def show_lease(lease_id: str, caller: Caller, node: Node) -> dict[str, Any]:
    with node.store.read() as tx:
        lease = tx.get_lease(lease_id)
    if lease is None:
        raise NotFoundError(f"no lease {lease_id!r}")
    return lease_json(lease)


@router.post("/v1/leases/{lease_id}/renew")
def renew_lease(
    lease_id: str, body: RenewRequest, caller: TaskOrApiToken, node: Node
) -> dict[str, Any]:
    """Extend an opaque token's lease; policy decides again (action `renew`)."""
    ttl = optional_duration("ttl", body.ttl)
    lease, bound = node.issuance.renew(lease_id, caller.task_subject, caller.actor, ttl)
    return {**lease_json(lease), "bounded_by": bound.name}


@router.post("/v1/leases/revoke")
def revoke_leases(body: RevokeRequest, caller: Caller, node: Node) -> dict[str, Any]:
    """Revocation and the kill switch: by lease, task, identity, owner, or everything."""
    chosen = [k for k in ("lease", "task", "identity", "owner") if getattr(body, k)]
    if len(chosen) + int(body.all) != 1:
        raise OAuthError(
            "invalid_request", "give exactly one of lease, task, identity, owner or all", 422
        )
    target = RevokeTarget(
        lease_id=body.lease,
        task_id=body.task,
        identity_id=body.identity,
        owner_id=body.owner,
        everything=body.all,
    )
    may_revoke(node, caller, target)
    revoked = node.leases.revoke(target, body.reason, caller.actor)
    node.worker.wake()
    return {"revoked": revoked}
