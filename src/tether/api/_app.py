from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request
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
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tether
from tether._internal.fieldpath import field_path
from tether._internal.timeutil import InvalidValue, format_time, parse_duration, utcnow
from tether.api._access import ROUTES, rule_for
from tether.api._core import register_core_routes
from tether.api._deps import Caller
from tether.api._proxies import ClientAddress
from tether.api._routing import TetherRoute, text_response
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
from tether.audit import jsonl_line, record_to_json
from tether.barrier import RateLimited
from tether.errors import ConflictError, NotFoundError, TetherError
from tether.estate import (
    SAFE_ID_MAX_LENGTH,
    SAFE_ID_PATTERN,
    EstateInvalid,
    estate_schema,
    parse_estate,
)
from tether.model import AuditEvent, Kind
from tether.store import ApiTokenRecord, IdentityFilter

log = logging.getLogger("tether.api")

_WHILE_SEALED = {
    "/v1/sys/health",
    "/v1/sys/status",
    "/openapi.json",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/v1/sys/init",
    "/v1/sys/unseal",
}
#: Sequence numbers and other integers in queries fit a signed 64-bit column.
MAX_SEQ = 2**63 - 1


class _Gate:
    """The client address, the seal gate, request ids, metrics, the access log, and the
    last word on errors: an exception no handler took is a logged, counted 500 with a
    request id and no detail. Plain ASGI (no per-request task group)."""

    def __init__(
        self,
        app: ASGIApp,
        node: Tether,
        requests_total: Counter,
        latency: Histogram,
        addresses: ClientAddress,
    ) -> None:
        self.app, self.node = app, node
        self.requests_total, self.latency = requests_total, latency
        self.addresses = addresses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        request_id = secrets.token_hex(8)
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
            if self.node.barrier.sealed and scope["path"] not in _WHILE_SEALED:
                await _error(503, "sealed", "Tether is sealed: unseal it with `tether unseal`")(
                    scope, receive, send_status
                )
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
                await _error(
                    500,
                    "internal",
                    f"internal error (request id {request_id}); see the server log",
                    request_id=request_id,
                )(scope, receive, send_status)
        finally:
            route_path = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.requests_total.labels(scope["method"], route_path, str(status)).inc()
            self.latency.labels(route_path).observe(elapsed)
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


def _error(
    status: int, code: str, message: str, problems: Any = None, **extra: Any
) -> JSONResponse:
    body = ErrorBody(error=code, message=message, problems=problems).model_dump(exclude_none=True)
    return JSONResponse({**body, **extra}, status_code=status)


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
    app.router.route_class = TetherRoute
    app.state.node = node
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

    app.add_middleware(
        _Gate,
        node=node,
        requests_total=requests_total,
        latency=latency,
        addresses=ClientAddress(node.settings.trusted_proxies),
    )

    @app.exception_handler(TetherError)
    async def _tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        problems = None
        extra: dict[str, Any] = {}
        if isinstance(exc, EstateInvalid):
            problems = [{"path": p.path, "message": p.message} for p in exc.problems]
            extra["problem_count"] = getattr(exc, "count", len(problems))
            extra["problems_truncated"] = bool(getattr(exc, "truncated", False))
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        response = _error(exc.status_code, exc.code, str(exc), problems, **extra)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unparseable bodies, unknown routes and wrong methods: the same shape as the rest.
        codes = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }
        response = _error(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Every method the path has, not only those of the first route that matched.
            response.headers["Allow"] = ", ".join(_methods_of(app, _request.scope))
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "path": field_path((p for p in e["loc"] if p != "body"), whole="(body)"),
                "message": e["msg"],
            }
            for e in exc.errors()[:100]
        ]
        message = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
        return _error(422, "invalid_request", f"invalid request: {message}", problems)

    # -- system --
    @app.get("/v1/sys/health", tags=["sys"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "sealed": node.barrier.sealed, "version": tether.__version__}

    @app.get("/v1/sys/status", tags=["sys"], response_model=StatusResponse)
    def status() -> Any:
        return node.barrier.status()

    @app.post("/v1/sys/init", tags=["sys"], response_model=InitResponse)
    def init(body: InitRequest) -> Any:
        if node.barrier.status().initialized:
            raise ConflictError("Tether is already initialized")
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
        with node.store.read() as tx:
            return [_token_info(r) for r in tx.list_api_tokens()]

    @app.delete("/v1/tokens/{token_id}", tags=["tokens"], status_code=204)
    def revoke_token(token_id: str, caller: Caller) -> Response:
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
    def show_identity(
        identity_id: Annotated[str, Path(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH)],
        caller: Caller,
    ) -> dict[str, Any]:
        return node.estate.get_identity(identity_id, caller.owner_scope())

    # -- audit --
    @app.get("/v1/audit", tags=["audit"])
    def list_audit(
        caller: Caller,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        identity: Annotated[str | None, Query(max_length=255)] = None,
    ) -> dict[str, Any]:
        with node.store.read() as tx:
            records = tx.list_audit(after, limit, identity)
        return {"items": [record_to_json(r) for r in records]}

    @app.get("/v1/audit/verify", tags=["audit"])
    def verify_audit(caller: Caller) -> dict[str, Any]:
        return node.verify_audit().to_dict()

    @app.get(
        "/v1/audit/export",
        tags=["audit"],
        response_class=StreamingResponse,
        responses=text_response("application/x-ndjson", "The audit log, one JSON object a line"),
    )
    def export_audit(caller: Caller) -> StreamingResponse:

        def lines() -> Iterator[str]:
            for record in node.store.iter_audit():
                yield jsonl_line(record)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/alerts", tags=["audit"])
    def list_alerts(
        caller: Caller,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> dict[str, Any]:
        """Alerts (failed revocations, use of retired secrets ...): audit entries `alert.*`."""
        with node.store.read() as tx:
            records = tx.list_audit(after, limit, action_prefix="alert.")
        return {"items": [record_to_json(r) for r in records]}

    @app.post("/v1/audit/hmac", tags=["audit"])
    def audit_hmac(body: HmacRequest, caller: Caller) -> dict[str, str]:
        """The HMAC a sensitive value would have in the log, to look for it there."""
        return {"hmac": node.audit.fingerprint(body.value)}

    register_core_routes(app, node)

    # -- observability --
    @app.get(
        "/metrics",
        tags=["sys"],
        response_class=Response,
        responses=text_response("text/plain", "Prometheus text exposition format"),
    )
    def metrics(caller: Caller) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    _check_every_route_has_a_rule(app)
    return app


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


def _check_every_route_has_a_rule(app: FastAPI) -> None:
    """Building the app fails if a route is missing from the access table, or the table
    names a route that does not exist (a rule nobody reads is a rule that drifted)."""
    seen: set[tuple[str, str]] = set()
    for route in app.routes:
        if not isinstance(route, Route):
            continue
        for method in route.methods or ():
            if method == "HEAD":
                continue
            rule_for(method, route.path)  # raises LookupError naming the route
            seen.add((method, route.path))
    stale = set(ROUTES) - seen
    if stale:
        raise LookupError(f"access rules for routes that do not exist: {sorted(stale)}")


class _Invalid(TetherError):
    status_code = 422
    code = "invalid_request"
