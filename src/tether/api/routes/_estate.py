"""The estate document: its JSON Schema, and plan/apply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute
from tether.estate import estate_schema, parse_estate

router = APIRouter(route_class=TetherRoute, tags=["estate"])


@router.get("/v1/estate/schema")
def schema(caller: Caller) -> dict[str, Any]:
    return estate_schema()


@router.post("/v1/estate/apply")
def apply(
    caller: Caller,
    node: Node,
    document: Annotated[Any, Body()],
    dry_run: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    estate = parse_estate(document)
    plan = (
        node.estate.plan(estate) if dry_run else node.estate.apply(estate, caller.actor, document)
    )
    return {"dry_run": dry_run, **plan.to_dict()}
