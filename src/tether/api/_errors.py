"""Tether's own error shape (`error`, `message`, `problems`) and the handlers that give
every error reaching the app that shape: Tether's errors, Starlette's (bad bodies, unknown
routes, wrong methods) and request validation."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import Scope

from tether._internal.problems import request_problems
from tether.api._schemas import DURATION_PATTERN, ErrorBody
from tether.barrier import RateLimited
from tether.errors import TetherError
from tether.estate import EstateInvalid

_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


class InvalidRequest(TetherError):
    """A field that passed the schema but not its parser (a duration out of range)."""

    status_code = 422
    code = "invalid_request"


def error_response(
    status: int, code: str, message: str, problems: Any = None, **extra: Any
) -> JSONResponse:
    body = ErrorBody(error=code, message=message, problems=problems).model_dump(exclude_none=True)
    return JSONResponse({**body, **extra}, status_code=status)


async def _tether_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TetherError)
    problems = None
    extra: dict[str, Any] = {}
    if isinstance(exc, EstateInvalid):
        problems = [{"path": p.path, "message": p.message} for p in exc.problems]
        extra["problem_count"] = getattr(exc, "count", len(problems))
        extra["problems_truncated"] = bool(getattr(exc, "truncated", False))
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    response = error_response(exc.status_code, exc.code, str(exc), problems, **extra)
    if headers:
        response.headers.update(headers)
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Unparseable bodies, unknown routes and wrong methods: the same shape as the rest.
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(
        exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)
    )
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # Every method the path has, not only those of the first route that matched.
        response.headers["Allow"] = ", ".join(_methods_of(request.app, request.scope))
    return response


#: Tether's words for the patterns whose regex would otherwise be the message.
_WORDS = {DURATION_PATTERN: "must be a duration such as 90s, 15m, 1h30m, 30d or 2w"}


async def _bad_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = request_problems(exc.errors()[:100], _WORDS)
    message = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
    return error_response(422, "invalid_request", f"invalid request: {message}", problems)


def _methods_of(app: FastAPI, scope: Scope) -> list[str]:
    """The methods of the most specific routes the path matches: `/v1/leases/revoke`
    is its own resource, not a lease named "revoke"."""
    by_params: dict[int, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**scope, "method": "__none__"})
            if match is not Match.NONE:
                by_params.setdefault(route.path.count("{"), set()).update(route.methods)
    return sorted(by_params[min(by_params)]) if by_params else []


def register(app: FastAPI) -> None:
    """Install the handlers that answer errors in Tether's shape."""
    app.add_exception_handler(TetherError, _tether_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
