from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tether
from tether._internal.timeutil import InvalidValue, format_time, parse_duration, utcnow
from tether.api._core import register_core_routes
from tether.api._deps import Caller
from tether.api._schemas import (
    ErrorBody,
    HmacRequest,
    InitRequest,
    InitResponse,
    RotateResponse,
    StatusResponse,
    TokenCreateRequest,
    TokenCreateResponse,
    TokenInfo,
    UnsealRequest,
)
from tether.app import Tether
from tether.audit import record_to_json
from tether.errors import NotFoundError, TetherError
from tether.estate import EstateInvalid, estate_schema, parse_estate
from tether.model import AuditEvent, Kind
from tether.store import ApiTokenRecord, IdentityFilter

log = logging.getLogger("tether.api")

#: Reachable without a token (and, but for init/unseal, while sealed).
_PUBLIC = {
    "/v1/sys/health",
    "/v1/sys/status",
    "/openapi.json",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
}
_WHILE_SEALED = _PUBLIC | {"/v1/sys/init", "/v1/sys/unseal"}
MAX_BODY_BYTES = 64 * 1024 * 1024


class _Gate:
    """Seal gate, metrics and the access log, as plain ASGI (no per-request task group)."""

    def __init__(
        self, app: ASGIApp, node: Tether, requests_total: Counter, latency: Histogram
    ) -> None:
        self.app, self.node = app, node
        self.requests_total, self.latency = requests_total, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if self.node.barrier.sealed and scope["path"] not in _WHILE_SEALED:
            await _error(503, "sealed", "Tether is sealed: unseal it with `tether unseal`")(
                scope, receive, send_status
            )
        else:
            await self.app(scope, receive, send_status)
        route_path = getattr(scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - started
        self.requests_total.labels(scope["method"], route_path, str(status)).inc()
        self.latency.labels(route_path).observe(elapsed)
        client = scope.get("client")
        log.info(
            "request",
            extra={
                "method": scope["method"],
                "path": route_path,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                "client": client[0] if client else None,
            },
        )


class _BodyLimit:
    """Refuse request bodies over the limit, declared or streamed, before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        over = responded = False

        async def limited() -> Message:
            # Past the limit the app sees a disconnect; whatever it answers is dropped
            # and the 413 below is sent instead.
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if not over:
                responded = True
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not responded:
            await _too_large(send, self.limit)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": "too_large", "message": f"request body over {limit} bytes"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, code: str, message: str, problems: Any = None) -> JSONResponse:
    return JSONResponse(
        ErrorBody(error=code, message=message, problems=problems).model_dump(exclude_none=True),
        status_code=status,
    )


def _token_info(record: ApiTokenRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "roles": list(record.roles),
        "created_at": format_time(record.created_at),
        "created_by": record.created_by,
        "expires_at": None if record.expires_at is None else format_time(record.expires_at),
        "revoked_at": None if record.revoked_at is None else format_time(record.revoked_at),
    }


def create_app(node: Tether) -> FastAPI:
    app = FastAPI(
        title="Tether",
        version=tether.__version__,
        description="Control plane for non-human identities.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = node
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    registry = CollectorRegistry()
    requests_total = Counter(
        "tether_http_requests_total",
        "HTTP requests",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "tether_http_request_seconds", "HTTP request latency", ["route"], registry=registry
    )
    sealed_gauge = Gauge("tether_sealed", "1 while the barrier is sealed", registry=registry)
    sealed_gauge.set_function(lambda: 1.0 if node.barrier.sealed else 0.0)
    alerts_total = Counter("tether_alerts_total", "Alerts raised", ["kind"], registry=registry)
    node.leases.on_alert.append(lambda kind: alerts_total.labels(kind).inc())
    audit_entries = Gauge(
        "tether_audit_head_seq", "Sequence number of the audit head", registry=registry
    )

    def _audit_head() -> float:
        with node.store.read() as tx:
            return float(tx.audit_head()[0])

    audit_entries.set_function(_audit_head)

    app.add_middleware(_Gate, node=node, requests_total=requests_total, latency=latency)

    @app.exception_handler(TetherError)
    async def _tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        problems = None
        if isinstance(exc, EstateInvalid):
            problems = [{"path": p.path, "message": p.message} for p in exc.problems]
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        response = _error(exc.status_code, exc.code, str(exc), problems)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unparseable bodies, unknown routes and wrong methods: the same shape as the rest.
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
        response = _error(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "path": ".".join(str(p) for p in e["loc"] if p != "body") or "(body)",
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        message = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
        return _error(422, "invalid_request", f"invalid request: {message}", problems)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal", "internal error; see the server log")

    # -- system --
    @app.get("/v1/sys/health", tags=["sys"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "sealed": node.barrier.sealed, "version": tether.__version__}

    @app.get("/v1/sys/status", tags=["sys"], response_model=StatusResponse)
    def status() -> Any:
        return node.barrier.status()

    @app.post("/v1/sys/init", tags=["sys"], response_model=InitResponse)
    def init(body: InitRequest) -> Any:
        return node.initialize(body.shares, body.threshold, seal_after=True)

    @app.post("/v1/sys/unseal", tags=["sys"], response_model=StatusResponse)
    def unseal(body: UnsealRequest, request: Request) -> Any:
        return node.unseal(body.share, request.client.host if request.client else "unknown")

    @app.post("/v1/sys/seal", tags=["sys"], response_model=StatusResponse)
    def seal(caller: Caller) -> Any:
        return node.seal(caller)

    @app.post("/v1/sys/rotate", tags=["sys"], response_model=RotateResponse)
    def rotate(caller: Caller) -> Any:
        return {"term": node.rotate(caller)}

    # -- tokens --
    @app.post("/v1/tokens", tags=["tokens"], response_model=TokenCreateResponse, status_code=201)
    def create_token(body: TokenCreateRequest, caller: Caller) -> Any:
        caller.require_admin()
        try:
            ttl = None if body.ttl is None else parse_duration(body.ttl)
        except InvalidValue as exc:
            raise _Invalid(f"ttl: {exc}") from None
        with node.store.transaction() as tx:
            token, record = node.auth.issue(tx, body.name, body.roles, caller.actor, ttl)
            node.audit.append(
                tx,
                [
                    AuditEvent(
                        action="token.create",
                        actor=caller.actor,
                        details={
                            "token_id": record.id,
                            "name": record.name,
                            "roles": list(record.roles),
                        },
                    )
                ],
            )
        return {**_token_info(record), "token": token}

    @app.get("/v1/tokens", tags=["tokens"], response_model=list[TokenInfo])
    def list_tokens(caller: Caller) -> Any:
        caller.require_admin()
        with node.store.read() as tx:
            return [_token_info(r) for r in tx.list_api_tokens()]

    @app.delete("/v1/tokens/{token_id}", tags=["tokens"], status_code=204)
    def revoke_token(token_id: str, caller: Caller) -> Response:
        caller.require_admin()
        with node.store.transaction() as tx:
            if not tx.revoke_api_token(token_id, utcnow()):
                raise NotFoundError(f"no active token {token_id!r}")
            tx.on_commit(node.auth.forget_cached)
            node.audit.append(
                tx,
                [
                    AuditEvent(
                        action="token.revoke", actor=caller.actor, details={"token_id": token_id}
                    )
                ],
            )
        return Response(status_code=204)

    # -- estate --
    @app.get("/v1/estate/schema", tags=["estate"])
    def schema(caller: Caller) -> dict[str, Any]:
        return estate_schema()

    @app.post("/v1/estate/apply", tags=["estate"])
    def apply(
        caller: Caller,
        document: Annotated[Any, Body()],
        dry_run: Annotated[bool, Query()] = False,
    ) -> dict[str, Any]:
        caller.require_admin()
        estate = parse_estate(document)
        plan = (
            node.estate.plan(estate)
            if dry_run
            else node.estate.apply(estate, caller.actor, document)
        )
        return {"dry_run": dry_run, **plan.to_dict()}

    # -- inventory --
    @app.get("/v1/identities", tags=["inventory"])
    def list_identities(
        caller: Caller,
        kind: Kind | None = None,
        owner: Annotated[str | None, Query(max_length=255)] = None,
        environment: Annotated[str | None, Query(max_length=64)] = None,
        status: Annotated[str | None, Query(pattern="^(active|suspended|retired)$")] = None,
        after: Annotated[str | None, Query(max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict[str, Any]:
        where = IdentityFilter(
            kind=None if kind is None else kind.value,
            owner_id=owner,
            environment=environment,
            status=status,
            owner_in=caller.owner_scope(),
            after_id=after,
            limit=limit,
        )
        items = [i.to_spec() for i in node.estate.list_identities(where)]
        return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}

    @app.get("/v1/identities/{identity_id}", tags=["inventory"])
    def show_identity(identity_id: str, caller: Caller) -> dict[str, Any]:
        return node.estate.get_identity(identity_id, caller.owner_scope())

    # -- audit --
    @app.get("/v1/audit", tags=["audit"])
    def list_audit(
        caller: Caller,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        identity: Annotated[str | None, Query(max_length=255)] = None,
    ) -> dict[str, Any]:
        caller.require_reader()
        with node.store.read() as tx:
            records = tx.list_audit(after, limit, identity)
        return {"items": [record_to_json(r) for r in records]}

    @app.get("/v1/audit/verify", tags=["audit"])
    def verify_audit(caller: Caller) -> dict[str, Any]:
        caller.require_reader()
        return node.verify_audit().to_dict()

    @app.get("/v1/audit/export", tags=["audit"])
    def export_audit(caller: Caller) -> StreamingResponse:
        caller.require_reader()

        def lines() -> Iterator[str]:
            for record in node.store.iter_audit():
                yield (
                    json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))
                    + "\n"
                )

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/alerts", tags=["audit"])
    def list_alerts(
        caller: Caller,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> dict[str, Any]:
        """Alerts (failed revocations, use of retired secrets ...): audit entries `alert.*`."""
        caller.require_reader()
        with node.store.read() as tx:
            records = tx.list_audit(after, limit, action_prefix="alert.")
        return {"items": [record_to_json(r) for r in records]}

    @app.post("/v1/audit/hmac", tags=["audit"])
    def audit_hmac(body: HmacRequest, caller: Caller) -> dict[str, str]:
        """The HMAC a sensitive value would have in the log, to look for it there."""
        caller.require_reader()
        return {"hmac": node.audit.fingerprint(body.value)}

    register_core_routes(app, node)

    # -- observability --
    @app.get("/metrics", tags=["sys"])
    def metrics(caller: Caller) -> Response:
        caller.require_reader()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Invalid(TetherError):
    status_code = 422
    code = "invalid_request"
