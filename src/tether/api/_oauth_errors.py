"""Issuance refusals as RFC 6749 errors, at the edge: the one place that knows which
domain error is which OAuth code and HTTP status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tether.errors import TetherError
from tether.issuance import (
    AccessDenied,
    AttestationUnavailable,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    IssuanceError,
    NotFound,
    TaskTokenRequired,
    UnauthorizedClient,
    UnknownTarget,
    WindowFull,
)


class OAuthError(TetherError):
    """A protocol error the API raises itself (a bad form, an unsupported grant type):
    `error` is the registered code, the message its description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.code = error
        self.status_code = status


#: Most specific first: the first class the error is an instance of decides.
_OAUTH: tuple[tuple[type[IssuanceError], str, int], ...] = (
    (UnknownTarget, "invalid_target", 404),
    (InvalidTarget, "invalid_target", 400),
    (InvalidRequest, "invalid_request", 400),
    (InvalidScope, "invalid_scope", 400),
    (UnauthorizedClient, "unauthorized_client", 400),
    (InvalidGrant, "invalid_grant", 400),
    (WindowFull, "access_denied", 403),
    (AccessDenied, "access_denied", 403),
    (AttestationUnavailable, "temporarily_unavailable", 503),
    (TaskTokenRequired, "invalid_token", 401),
)


def _oauth_response(error: str, description: str, status: int) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _as_oauth(exc: IssuanceError) -> tuple[str, int]:
    for kind, error, status in _OAUTH:
        if isinstance(exc, kind):
            return error, status
    return "invalid_request", 400  # an IssuanceError not in the table is still a refusal


def register(app: FastAPI) -> None:
    """Install the handlers that answer IssuanceErrors and OAuthErrors."""

    async def _oauth_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OAuthError)
        return _oauth_response(exc.error, str(exc), exc.status_code)

    async def _issuance_error(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, NotFound):
            # An administrative lookup, not a protocol exchange: the API's usual 404 body.
            return JSONResponse({"error": "not_found", "message": str(exc)}, status_code=404)
        assert isinstance(exc, IssuanceError)
        error, status = _as_oauth(exc)
        return _oauth_response(error, str(exc), status)

    app.add_exception_handler(OAuthError, _oauth_error)
    app.add_exception_handler(IssuanceError, _issuance_error)
