"""RFC 6749 errors at the HTTP edge: the one place routes take `OAuthError` from, and the
handler that answers it in RFC 6749's shape (`error`, `error_description`)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tether.issuance.errors import OAuthError

__all__ = ["OAuthError", "register"]


async def _oauth_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OAuthError)
    headers = {"Cache-Control": "no-store"}
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return JSONResponse(
        {"error": exc.error, "error_description": str(exc)},
        status_code=exc.status_code,
        headers=headers,
    )


def register(app: FastAPI) -> None:
    """Answer every `OAuthError` that reaches the app as RFC 6749 says."""
    app.add_exception_handler(OAuthError, _oauth_error)
