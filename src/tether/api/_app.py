"""The app: routers, error handlers, metrics and the gate, put together for one node."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import tether
from tether.api import _errors, _oauth_errors
from tether.api._access import ROUTES, rule_for
from tether.api._gate import Gate
from tether.api._proxies import ClientAddress
from tether.api._routing import HotRoutes, TetherRoute
from tether.api.routes import HOT_PATHS, ROUTERS
from tether.app import Tether
from tether.govern import FindingGauges
from tether.model import RULES


class TetherApp(FastAPI):
    """FastAPI, with the hot routes (token exchange, introspection) served in front of
    its middleware stack: by `edge`, a gate of their own. Through the stack (FastAPI's
    error, telemetry and body-limit layers, each wrapping `send`) a request cost about
    0.3 ms more than the route's own work; uvicorn alone serves one in 20 µs here."""

    edge: Gate | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.edge
        if edge is not None and scope["type"] == "http" and edge.serves(scope):
            await edge(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(node: Tether) -> TetherApp:
    app = TetherApp(
        title="Tether",
        version=tether.__version__,
        description="Control plane for non-human identities.",
        docs_url=None,
        redoc_url=None,
        # Tether reports through its own metrics, logs and audit. FastAPI's OpenTelemetry
        # would look up OTEL_* variables on every request, and export request data to
        # wherever such a variable points: neither belongs in a control plane's hot path.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.router.route_class = TetherRoute
    app.state.node = node
    # The API token service writes the audit trail of token changes; it has no state.
    app.state.tokens = node.tokens
    registry = CollectorRegistry()
    app.state.metrics = registry
    requests_total, latency, app.state.refresh_metrics = _register_metrics(registry, node)
    _errors.register(app)
    _oauth_errors.register(app)
    for router in ROUTERS:
        # The routes themselves, not `include_router`: this FastAPI would wrap them in one
        # included-router entry, and the access check, the 405 `Allow` header, the metrics'
        # route labels and the tests all read `app.routes` as the routes they are.
        app.router.routes.extend(router.routes)
    _check_every_route_has_a_rule(app)
    # The dashboard: its own pages, admitted by the same rules (tether.web reads this
    # package's access table, so it is imported here, not at the top).
    from tether.web import BASE as WEB_BASE
    from tether.web import create_web

    app.mount(WEB_BASE, create_web(node))
    addresses = ClientAddress(node.settings.trusted_proxies)
    app.add_middleware(
        Gate, node=node, requests_total=requests_total, latency=latency, addresses=addresses
    )
    app.edge = Gate(app, node, requests_total, latency, addresses, HotRoutes(app, HOT_PATHS))
    return app


def _register_metrics(
    registry: CollectorRegistry, node: Tether
) -> tuple[Counter, Histogram, Callable[[], None]]:
    """The node's metrics; the request counter and latency histogram the gate feeds."""
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
    findings = FindingGauges(registry)
    severity_of = {rule.id: rule.severity.value for rule in RULES.values()}

    def refresh_governance() -> None:
        # Set when scraped: counts of stored findings and of alerts still to deliver.
        findings.set_from(node.govern.finding_counts(), severity_of)
        sinks = [str(s.get("id")) for s in node.view.current.governance.sinks]
        findings.set_pending(node.alerts.pending(), sinks)

    return requests_total, latency, refresh_governance


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
