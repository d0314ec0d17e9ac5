"""Dependencies shared by the route modules."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tether.api._access import Admitted
from tether.auth import Principal, Unauthenticated


def admission(request: Request) -> Admitted:
    """What the access table admitted for this request (see `tether.api._access`)."""
    admitted: Admitted = request.state.admitted
    return admitted


def principal(request: Request) -> Principal:
    """The caller's API token, as the access table admitted it."""
    admitted = admission(request)
    if admitted.principal is None:
        raise Unauthenticated("an API token is required: set TETHER_TOKEN or send a bearer token")
    return admitted.principal


Caller = Annotated[Principal, Depends(principal)]
Admission = Annotated[Admitted, Depends(admission)]
