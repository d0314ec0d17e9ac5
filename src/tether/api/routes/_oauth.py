"""OAuth: discovery, JWKS, RFC 8693 token exchange, RFC 7662 introspection, RFC 7009
revocation. Bodies are forms, parsed here; errors are RFC 6749's."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tether.api._access import bearer_of
from tether.api._deps import Node, client_certificate, client_ip, duration
from tether.api._oauth_errors import OAuthError
from tether.api._routing import TetherRoute, in_hot_thread
from tether.api._schemas import DURATION_PATTERN
from tether.issuance import ExchangeRequest

router = APIRouter(route_class=TetherRoute, tags=["oauth"])

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URI
_MAX_FIELD = 16 * 1024
#: Form fields that may be given more than once (RFC 8693 §2.1).
_REPEATABLE = ("audience", "resource")

_DURATION = {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 40}
_FORM_FIELD = {"type": "string", "maxLength": _MAX_FIELD}
_REQUIRED_FIELD = {"type": "string", "minLength": 1, "maxLength": _MAX_FIELD}


def _form_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An `application/x-www-form-urlencoded` request body, for the OpenAPI document."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                    }
                }
            },
        }
    }


_TOKEN_FORM = _form_body(
    {
        "grant_type": {"type": "string", "enum": [TOKEN_EXCHANGE]},
        "subject_token": {
            **_REQUIRED_FIELD,
            "description": "required unless the client presents a certificate over mTLS "
            "(an x509 issuer's): then, without it, the certificate is the subject",
        },
        "subject_token_type": {
            "type": "string",
            "enum": [
                "urn:ietf:params:oauth:token-type:access_token",
                "urn:ietf:params:oauth:token-type:jwt",
            ],
        },
        "audience": _FORM_FIELD,
        "resource": _FORM_FIELD,
        "scope": _FORM_FIELD,
        "ttl": _DURATION,
        "requested_token_type": _FORM_FIELD,
        "actor_token": _FORM_FIELD,
        "actor_token_type": _FORM_FIELD,
        "task": {"type": "string", "maxLength": 64},
        "intent": {"type": "string", "maxLength": 500},
    },
    ["grant_type"],
)
_TOKEN_ONLY_FORM = _form_body(
    {"token": _REQUIRED_FIELD, "token_type_hint": _FORM_FIELD},
    ["token"],
)


async def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        raw = (await request.body()).decode("utf-8")
        pairs = parse_qs(raw, keep_blank_values=False, strict_parsing=False, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body could not be parsed") from None
    form: dict[str, str] = {}
    for name, values in pairs.items():
        if len(values) > 1 and name not in _REPEATABLE:
            raise OAuthError("invalid_request", f"{name} is given more than once")
        if any(len(v) > _MAX_FIELD for v in values):
            raise OAuthError("invalid_request", f"{name} is too long")
        form[name] = values[0]
    return form


async def _token_form(request: Request) -> str:
    """The `token` of an introspection or revocation form."""
    token_value = (await _form(request)).get("token")
    if not token_value:
        raise OAuthError("invalid_request", "token is required")
    return token_value


@router.get("/.well-known/openid-configuration")
def discovery(node: Node) -> dict[str, Any]:
    base = node.settings.issuer_url
    return {
        "issuer": base,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/oauth2/token",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "revocation_endpoint": f"{base}/oauth2/revoke",
        "grant_types_supported": [TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "revocation_endpoint_auth_methods_supported": ["none", "bearer"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }


@router.get("/.well-known/jwks.json")
def jwks(node: Node) -> dict[str, Any]:
    return node.signing_keys.jwks()


def _exchange_request(form: dict[str, str], request: Request) -> ExchangeRequest:
    scope = form.get("scope")
    return ExchangeRequest(
        subject_token=form.get("subject_token", ""),
        subject_token_type=form.get("subject_token_type", ""),
        audience=form.get("audience"),
        resource=form.get("resource"),
        scope=None if scope is None else tuple(scope.split()),
        requested_ttl=None if "ttl" not in form else duration("ttl", form["ttl"]),
        requested_token_type=form.get("requested_token_type"),
        actor_token=form.get("actor_token"),
        actor_token_type=form.get("actor_token_type"),
        task_id=form.get("task"),
        intent=form.get("intent"),
        source_ip=client_ip(request),
        client_certificate=client_certificate(request),
    )


#: Served beneath the framework (`tether.api._routing.HotRoutes`): their endpoints take
#: the request alone.
HOT_PATHS = {("POST", "/oauth2/token"), ("POST", "/oauth2/introspect")}


@router.post("/oauth2/token", openapi_extra=_TOKEN_FORM)
async def token(request: Request) -> JSONResponse:
    node = request.app.state.node
    form = await _form(request)
    if form.get("grant_type") != TOKEN_EXCHANGE:
        raise OAuthError("unsupported_grant_type", f"grant_type must be {TOKEN_EXCHANGE}")
    exchange = _exchange_request(form, request)
    result = await in_hot_thread(node.issuance.exchange, exchange)
    body = {
        "access_token": result.access_token,
        "issued_token_type": result.issued_token_type,
        "token_type": "Bearer",
        "expires_in": result.expires_in,
        "scope": " ".join(result.scope),
        "tether_lease": result.lease_id,
        "tether_bounded_by": result.bounded_by,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.post("/oauth2/introspect", openapi_extra=_TOKEN_ONLY_FORM)
async def introspect(request: Request) -> JSONResponse:
    # The access table admitted an admin or introspection token before the body is read.
    node = request.app.state.node
    token_value = await _token_form(request)
    # A token seen live moments ago is answered here; anything that needs a signature
    # check or the store goes to a thread.
    result = node.issuance.introspect_from_memory(token_value)
    if result is None:
        result = await in_hot_thread(node.issuance.introspect, token_value)
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


@router.post("/oauth2/revoke", openapi_extra=_TOKEN_ONLY_FORM)
async def revoke(request: Request, node: Node) -> JSONResponse:
    token_value = await _token_form(request)
    bearer = bearer_of(request.headers)
    actor = "holder"
    if bearer is not None:
        principal = await run_in_threadpool(node.auth.authenticate, bearer)
        actor = principal.actor
    # Possession is enough to give a credential up (RFC 7009 lets servers allow this).
    await run_in_threadpool(node.issuance.revoke_token, token_value, actor)
    return JSONResponse({}, status_code=200)
