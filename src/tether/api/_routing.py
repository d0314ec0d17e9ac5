"""The route class every Tether route uses: the access table, bounded and strict bodies,
and the error responses each route can give, declared in the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from tether.api._access import (
    PARTNER_SIGNATURE,
    Admitted,
    Rule,
    Who,
    admit,
    bearer_of,
    rule_for,
)

T = TypeVar("T")

#: JSON nested deeper than this is refused before Python's parser would recurse on it.
MAX_JSON_DEPTH = 64


class ErrorResponse(BaseModel):
    """Every error Tether answers: its own shape (`message`) or RFC 6749's
    (`error_description`), with the fields that failed validation where there are any."""

    error: str
    message: str | None = None
    error_description: str | None = None
    problems: list[dict[str, str]] | None = None
    problem_count: int | None = None
    problems_truncated: bool | None = None
    request_id: str | None = None


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def strict_json(raw: bytes) -> Any:
    """RFC 8259 JSON, refusing what Python's parser lets through: duplicate keys (the
    last would win, so `{"roles": ["admin"], "roles": ["auditor"]}` means two things),
    NaN and Infinity, and nesting deep enough to exhaust the parser's stack."""
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_not_json)
    except _DuplicateKey as exc:
        raise HTTPException(400, f"invalid JSON: duplicate key {str(exc)[:100]!r}") from None
    except json.JSONDecodeError as exc:
        raise HTTPException(
            400, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise HTTPException(400, f"invalid JSON: {str(exc)[:100]}") from None
    if isinstance(value, dict | list) and _depth_exceeds(value, MAX_JSON_DEPTH):
        raise HTTPException(400, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH}")
    return value


class _BoundedRequest(Request):
    """A request whose body is read at most up to its route's limit, and parsed strictly."""

    body_limit: int = 0

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length")
            if declared is not None and not declared.isdigit():
                raise HTTPException(400, "Content-Length must be a number of bytes")
            if declared is not None and int(declared) > self.body_limit:
                raise HTTPException(413, f"request body over {self.body_limit} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.body_limit:
                    raise HTTPException(413, f"request body over {self.body_limit} bytes")
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


def not_found_response(description: str) -> dict[int | str, dict[str, Any]]:
    """A 404 a route without an object in its path can give (what is missing)."""
    return {404: _error(description)}


def text_response(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 that is not JSON, declared as what it is."""
    return {
        200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}
    }


def error_responses(rule: Rule, path: str, method: str) -> dict[int | str, dict[str, Any]]:
    """The error responses a route with this rule can give."""
    responses: dict[int | str, dict[str, Any]] = {
        400: _error("Malformed request or body (bad JSON, duplicate keys)")
    }
    # Routes open to anyone but /oauth2/* check the evidence in the body.
    if rule.who != {Who.ANYONE} or path.startswith("/oauth2/"):
        responses[401] = _error("No token, or a token that is not valid")
        responses[403] = _error("The token may not do this")
    if "{" in path or method != "GET":
        responses[404] = _error("No such object, or not one the caller may see")
    if method != "GET":
        responses[409] = _error("Conflicts with the current state")
        responses[413] = _error("The body is over this route's limit")
    responses[422] = _error("A field failed validation; `problems` names each")
    if path == "/v1/sys/unseal":
        responses[429] = _error("Too many failed attempts from this address")
    responses[502] = _error("A target system or identity provider failed")
    responses[503] = _error("Sealed, or a dependency is unavailable")
    return responses


class TetherRoute(APIRoute):
    """An APIRoute that applies its entry of the access table before anything else runs."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = kwargs.get("methods") or ["GET"]
        (method,) = {m.upper() for m in methods}
        self.rule = rule_for(method, path)
        responses = dict(error_responses(self.rule, path, method))
        responses.update(kwargs.pop("responses", None) or {})
        super().__init__(path, endpoint, responses=responses, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        rule = self.rule

        async def admitted(request: Request) -> Response:
            bounded = _BoundedRequest(request.scope, request.receive)
            bounded.body_limit = rule.body_limit
            bounded.state.admitted = await admit_request(request.app.state.node, rule, bounded)
            return await handler(bounded)

        return admitted


async def admit_request(node: Any, rule: Rule, request: Request) -> Admitted:
    """The access table's verdict on `request` (raises 401, 403 or 404)."""
    bearer = bearer_of(request.headers)
    if (
        Who.PARTNER in rule.who
        and PARTNER_SIGNATURE in request.headers
        and node.github_keys.configured
    ):
        return Admitted()  # a signed partner alert: the handler verifies the signature
    if (
        rule.subject is not None
        or Who.TASK in rule.who
        or (Who.ANYONE not in rule.who and not node.auth.answers_from_memory(bearer))
    ):
        # Object, task-token and uncached-token checks read the store: not on the event
        # loop (an unknown token must not stall every other request).
        return await run_in_threadpool(admit, node, rule, bearer, request.path_params)
    return admit(node, rule, bearer, request.path_params)


#: The hot routes' blocking work runs here rather than in AnyIO's thread pool: a plain
#: executor hop costs a fraction of AnyIO's (capacity limiter, cancel scopes), and as many
#: threads as Starlette's pool keep enough issuances in flight to commit together.
_HOT_THREADS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="tether-hot")


async def in_hot_thread(work: Callable[..., T], *args: Any) -> T:
    """Run blocking `work(*args)` off the event loop, for a hot route."""
    return await asyncio.get_running_loop().run_in_executor(_HOT_THREADS, work, *args)


#: An endpoint served on the hot path: it takes the request alone and returns a response.
HotEndpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class HotRoutes:
    """The few routes every workload and resource server calls (token exchange,
    introspection), served as plain ASGI beneath the framework: the same access rule,
    bounded body, endpoint and error handlers as their TetherRoute, without routing
    through every route, dependency solving and four layers of middleware per request.
    Their endpoints take the request alone (`request.app.state.node` is the node)."""

    def __init__(self, app: Any, paths: set[tuple[str, str]]) -> None:
        self._app = app
        self._routes: dict[tuple[str, str], TetherRoute] = {}
        for route in app.routes:
            for method in getattr(route, "methods", None) or ():
                if (method, getattr(route, "path", None)) in paths:
                    self._routes[(method, route.path)] = route
        if set(self._routes) != paths:
            raise LookupError(f"hot routes that do not exist: {sorted(paths - set(self._routes))}")

    def route_for(self, scope: Scope) -> TetherRoute | None:
        return self._routes.get((scope["method"], scope["path"]))

    async def serve(self, route: TetherRoute, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self._app
        scope["route"] = route
        scope.setdefault("path_params", {})
        request = _BoundedRequest(scope, receive)
        request.body_limit = route.rule.body_limit
        endpoint: HotEndpoint = route.endpoint
        try:
            request.state.admitted = await admit_request(self._app.state.node, route.rule, request)
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the gate's last word: a logged 500
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        """The app's own exception handler for `exc` (most specific class first)."""
        handlers = self._app.exception_handlers
        for kind in type(exc).__mro__:
            if kind in handlers:
                return handlers[kind]
        return None
