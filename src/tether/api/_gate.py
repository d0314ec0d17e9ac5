"""The ASGI wrapper around the app: the client address, the seal gate, request ids,
metrics, the access log, and the last word on errors."""

from __future__ import annotations

import html
import itertools
import logging
import re
import secrets
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api._errors import error_response
from tether.api._proxies import ClientAddress
from tether.api._routing import HotRoutes
from tether.app import Tether
from tether.store import StoreError

log = logging.getLogger("tether.api")

#: What answers while the barrier is sealed: enough to see why, and to initialize or unseal.
_WHILE_SEALED = {
    "/v1/sys/health",
    "/v1/sys/status",
    "/openapi.json",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/.well-known/authzen-configuration",
    "/v1/sys/init",
    "/v1/sys/unseal",
}
#: A caller's own request id (AuthZEN's `X-Request-ID`) is echoed when it is this tame:
#: visible ASCII, bounded, so that it can go into the log as is.
_CALLER_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _CALLER_REQUEST_ID.fullmatch(text):
                return text
            break
    # Unique, not secret: a per-process random half and a count (os.urandom per request
    # was a twentieth of an introspection's time).
    return f"{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFF:08x}"


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNT = itertools.count()


_SEALED = "Tether is sealed: unseal it with `tether unseal`"
_SEALED_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sealed · Tether'
    "</title></head><body><main><h1>Tether is sealed</h1><p>{message}</p></main></body></html>"
)
_SEALED_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
_NOT_INITIALIZED = "Tether is not initialized: run `tether init`"


class Gate:
    """An exception no handler took is a logged, counted 500 with a request id and no
    detail. Plain ASGI (no per-request task group)."""

    def __init__(
        self,
        app: ASGIApp,
        node: Tether,
        requests_total: Counter,
        latency: Histogram,
        addresses: ClientAddress,
        hot: HotRoutes | None = None,
    ) -> None:
        self.app, self.node = app, node
        self.hot = hot
        self.requests_total, self.latency = requests_total, latency
        # The labelled children, kept: `labels()` checks and joins its arguments each call.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[str, Any] = {}
        self.addresses = addresses
        self._initialized_seen = False

    def serves(self, scope: Scope) -> bool:
        """Whether this gate serves `scope` itself (one of its hot routes)."""
        return self.hot is not None and self.hot.route_for(scope) is not None

    async def _initialized(self) -> bool:
        """Whether the barrier was ever initialized. That reads the store (not on the
        event loop), until the answer is yes: a node is never uninitialized again."""
        if not self._initialized_seen:
            try:
                status = await run_in_threadpool(self.node.barrier.status)
            except StoreError:
                return True  # cannot tell: say what is certain, that it is sealed
            self._initialized_seen = status.initialized
        return self._initialized_seen

    async def _refuse_sealed(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = _SEALED if await self._initialized() else _NOT_INITIALIZED
        if scope["path"].startswith("/ui/") or scope["path"] == "/ui":
            # A person at the dashboard gets a page, not JSON (and no sign-in form: the
            # node can check no token while sealed).
            page = _SEALED_PAGE.format(message=html.escape(message))
            await HTMLResponse(page, status_code=503, headers=_SEALED_PAGE_HEADERS)(
                scope, receive, send
            )
            return
        await error_response(503, "sealed", message)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        request_id = _request_id(scope["headers"])
        peer = scope.get("client")
        client = self.addresses.resolve(peer[0] if peer else None, scope["headers"])
        if peer is not None and client != peer[0]:
            scope["client"] = (client, peer[1])

        async def send_status(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            hot = self.hot.route_for(scope) if self.hot is not None else None
            if self.node.barrier.sealed and scope["path"] not in _WHILE_SEALED:
                await self._refuse_sealed(scope, receive, send_status)
            elif hot is not None:
                await self.hot.serve(hot, scope, receive, send_status)  # type: ignore[union-attr]
            else:
                await self.app(scope, receive, send_status)
        except Exception as exc:
            status = 500
            log.error(
                "unhandled error",
                exc_info=exc,
                extra={"request_id": request_id, "path": scope["path"]},
            )
            if not response_started:
                await error_response(
                    500,
                    "internal",
                    f"internal error (request id {request_id}); see the server log",
                    request_id=request_id,
                )(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - started, client, request_id)

    def _record(
        self, scope: Scope, status: int, elapsed: float, client: str | None, request_id: str
    ) -> None:
        route_path = getattr(scope.get("route"), "path", "unmatched")
        key = (scope["method"], route_path, status)
        counted = self._counted.get(key)
        if counted is None:
            counted = self._counted[key] = self.requests_total.labels(
                key[0], route_path, str(status)
            )
        counted.inc()
        timed = self._timed.get(route_path)
        if timed is None:
            timed = self._timed[route_path] = self.latency.labels(route_path)
        timed.observe(elapsed)
        log.info(
            "request",
            extra={
                "method": scope["method"],
                "path": route_path,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                "client": client,
                "request_id": request_id,
            },
        )
