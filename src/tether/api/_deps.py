"""Dependencies shared by the route modules: the node, the admitted caller, and the
small translations every route makes the same way (durations, the client's address)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from typing import Annotated

from fastapi import Depends, Request

from tether._internal.timeutil import InvalidValue, parse_duration
from tether.api._access import Admitted
from tether.api._oauth_errors import OAuthError
from tether.app import Tether
from tether.auth import Principal, TokenService, Unauthenticated

# The dependencies are coroutines: FastAPI would run a plain function in a thread, and
# none of them does I/O.


async def _node(request: Request) -> Tether:
    node: Tether = request.app.state.node
    return node


async def admission(request: Request) -> Admitted:
    """What the access table admitted for this request (see `tether.api._access`)."""
    admitted: Admitted = request.state.admitted
    return admitted


async def principal(request: Request) -> Principal:
    """The caller's API token, as the access table admitted it."""
    admitted = await admission(request)
    if admitted.principal is None:
        raise Unauthenticated("an API token is required: set TETHER_TOKEN or send a bearer token")
    return admitted.principal


async def task_or_api_token(request: Request) -> Admitted:
    """A task token (already matched to the task or lease the path names) or an API token
    the table admitted: the routes a workload and an operator share."""
    admitted = await admission(request)
    if admitted.task_subject is None and admitted.principal is None:
        raise Unauthenticated("a task token or an API token is required")
    return admitted


async def _tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


Node = Annotated[Tether, Depends(_node)]
Tokens = Annotated[TokenService, Depends(_tokens)]
Caller = Annotated[Principal, Depends(principal)]
TaskOrApiToken = Annotated[Admitted, Depends(task_or_api_token)]


def duration(field: str, text: str) -> dt.timedelta:
    """A duration field the schema let through (its pattern), parsed; out of range is an
    RFC 6749 `invalid_request` naming the field."""
    try:
        return parse_duration(text)
    except InvalidValue as exc:
        raise OAuthError("invalid_request", f"{field}: {exc}") from None


def optional_duration(field: str, text: str | None) -> dt.timedelta | None:
    return None if text is None else duration(field, text)


def client_certificate(request: Request) -> tuple[bytes, ...]:
    """The client certificate chain presented over mTLS (DER, leaf first), from the ASGI
    TLS extension (tether.cli._client_certs puts it there); () when there is none."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    try:
        return tuple(ssl.PEM_cert_to_DER_cert(pem) for pem in tls.get("client_cert_chain") or ())
    except ValueError:
        return ()


def client_ip(request: Request) -> str | None:
    """The peer's address, when it is one (policies compare it as an `ipaddr`)."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None
