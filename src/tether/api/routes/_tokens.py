"""API tokens: create, list, revoke (the auth service writes the audit trail)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from tether._internal.timeutil import InvalidValue, parse_duration
from tether.api._deps import Caller, Tokens
from tether.api._errors import InvalidRequest
from tether.api._routing import TetherRoute
from tether.api._schemas import TokenCreateRequest, TokenCreateResponse, TokenInfo, token_info

router = APIRouter(route_class=TetherRoute, tags=["tokens"])


@router.post("/v1/tokens", response_model=TokenCreateResponse, status_code=201)
def create_token(body: TokenCreateRequest, caller: Caller, tokens: Tokens) -> Any:
    try:
        ttl = None if body.ttl is None else parse_duration(body.ttl)
    except InvalidValue as exc:
        raise InvalidRequest(f"ttl: {exc}") from None
    token, record = tokens.create(body.name, body.roles, caller.actor, ttl)
    return {**token_info(record), "token": token}


@router.get("/v1/tokens", response_model=list[TokenInfo])
def list_tokens(caller: Caller, tokens: Tokens) -> Any:
    return [token_info(r) for r in tokens.all()]


@router.delete("/v1/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, caller: Caller, tokens: Tokens) -> Response:
    tokens.revoke(token_id, caller.actor)
    return Response(status_code=204)
