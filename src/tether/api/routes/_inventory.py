"""The inventory of identities, as the caller's token may see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute
from tether.api._schemas import page
from tether.estate import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN
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
    return page([i.to_spec() for i in node.estate.list_identities(where)], query.limit)


@router.get("/v1/identities/{identity_id}")
def show_identity(
    identity_id: Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH)],
    caller: Caller,
    node: Node,
) -> dict[str, Any]:
    return node.estate.get_identity(identity_id, caller.owner_scope())
