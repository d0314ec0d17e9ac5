"""Dependencies shared by the route modules."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tether.app import Tether
from tether.auth import Principal


def principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <Tether API token>`."""
    node: Tether = request.app.state.node
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return node.auth.authenticate(token.strip() or None)


Caller = Annotated[Principal, Depends(principal)]
