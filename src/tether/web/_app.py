"""The dashboard as an ASGI app mounted at /ui: sign-in, sessions, CSRF, security headers,
error pages, static assets, and the pages of every module, admitted by one table."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib.resources
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether._internal.timeutil import format_duration, format_time
from tether.api._access import admit_principal, check_table
from tether.auth import Principal, Unauthenticated
from tether.errors import TetherError
from tether.model import AuditEvent
from tether.web import _audit_pages, _identity, _inventory, _lineage, _overview, _queues
from tether.web._pages import BASE, Ctx, Page, Pages, url
from tether.web._session import (
    COOKIE,
    SECURE_COOKIE,
    Session,
    SessionCodec,
    SessionInvalid,
    SessionRecords,
)

#: Every page module, in the order of the navigation.
MODULES = (_overview, _inventory, _identity, _lineage, _queues, _audit_pages)

#: No inline script or style, nothing from another origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # `same-origin`, not `no-referrer`: under the latter a browser sends `Origin: null`.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
#: Forms are small; a larger body is refused before it is read whole.
FORM_LIMIT = 64 * 1024
#: The roles the dashboard serves; other tokens (introspect, usage ...) are for programs.
_SIGN_IN_ROLES = ("admin", "auditor")
_LOGIN_COOKIE = "tether_login"
_STATIC = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "lineage.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tether.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["url"] = url
    env.globals["BASE"] = BASE
    env.filters["when"] = _when
    return env


def _when(value: Any) -> str:
    """A time as the pages show it: ISO 8601 in UTC, to the second."""
    if value is None or value == "":
        return "—"
    if isinstance(value, dt.datetime):
        return format_time(value.replace(microsecond=0))
    if isinstance(value, dt.timedelta):
        return format_duration(value)
    return str(value)


class _Headers:
    """Adds the security headers to every answer of the dashboard."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode().lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                if secure:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Dashboard:
    """The pages and what every one of them shares."""

    def __init__(self, node: Any, modules: Iterable[Any] = MODULES) -> None:
        self.node = node
        self.codec = SessionCodec(node.barrier.token_key)
        self.sessions = SessionRecords(node.store, node.clock)
        self.env = _templates()
        self.pages: list[Page] = [p for m in modules for p in m.pages.pages]
        check_table({(p.method, p.path): p.rule for p in self.pages})

    # -- the app --
    def app(self) -> ASGIApp:
        routes = [
            Route("/login", self._login_form, methods=["GET"]),
            Route("/login", self._sign_in, methods=["POST"]),
            Route("/logout", self._sign_out, methods=["POST"]),
            Route("/static/{name}", self._static, methods=["GET"]),
        ]
        # Mounted at BASE: a route matches the path below it.
        routes += [
            Route(p.path.removeprefix(BASE) or "/", self._endpoint(p), methods=[p.method])
            for p in self.pages
        ]
        inner = Starlette(routes=routes, exception_handlers={404: self._not_found})
        return _Headers(inner)

    def render(self, template: str, **values: Any) -> str:
        values.setdefault("notice", None)
        return self.env.get_template(template).render(**values)

    def _cookie_name(self, request: Request) -> str:
        return SECURE_COOKIE if request.url.scheme == "https" else COOKIE

    # -- sign-in --
    def _login_key(self) -> bytes:
        return hmac.new(self.node.barrier.token_key(), b"tether/web/login", hashlib.sha256).digest()

    def _login_csrf(self, nonce: str) -> str:
        return hmac.new(self._login_key(), nonce.encode(), hashlib.sha256).hexdigest()

    async def _login_form(self, request: Request, error: str | None = None) -> Response:
        nonce = secrets.token_urlsafe(16)
        next_path = _safe_next(request.query_params.get("next"))
        html = self.render(
            "login.html",
            ctx=None,
            csrf=self._login_csrf(nonce),
            next_path=next_path,
            error=error,
        )
        response = HTMLResponse(html, status_code=401 if error else 200)
        response.set_cookie(
            _LOGIN_COOKIE,
            nonce,
            max_age=600,
            path=BASE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def _sign_in(self, request: Request) -> Response:
        form = await _read_form(request)
        if form is None or not _same_origin(request):
            return self._refusal(403, "This form did not come from this dashboard.")
        nonce = request.cookies.get(_LOGIN_COOKIE, "")
        given = form.get("csrf", "")
        if not nonce or not hmac.compare_digest(self._login_csrf(nonce).encode(), given.encode()):
            return await self._login_form(request, "The sign-in form expired: try again.")
        token = form.get("token", "").strip()
        try:
            principal = await run_in_threadpool(self.node.auth.authenticate, token)
        except Unauthenticated as refused:
            # The reason says what is wrong with the token, never any of it.
            return await self._login_form(request, f"Not signed in: {refused}.")
        if not (any(r in _SIGN_IN_ROLES for r in principal.roles) or principal.owned()):
            roles = ", ".join(principal.roles)
            return await self._login_form(
                request,
                f"Not signed in: the dashboard is for admin, auditor and owner:<id> tokens;"
                f" this one has {roles}.",
            )
        now = self.node.clock()
        session = self.codec.new(self.node.auth.digest(token), now, principal.expires_at)
        await run_in_threadpool(self._audit_session, "web.sign_in", principal, session)
        response = RedirectResponse(_safe_next(form.get("next")) or BASE + "/", status_code=303)
        self._set_session(request, response, self.codec.seal(session), session.expires_at - now)
        response.delete_cookie(_LOGIN_COOKIE, path=BASE)
        return response

    def _set_session(
        self, request: Request, response: Response, value: str, lifetime: dt.timedelta
    ) -> None:
        secure = request.url.scheme == "https"
        response.set_cookie(
            self._cookie_name(request),
            value,
            max_age=max(1, int(lifetime.total_seconds())),
            # `__Host-` cookies must be Path=/; the plain one stays under the dashboard.
            path="/" if secure else BASE,
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    def _audit_session(self, action: str, principal: Principal, session: Session) -> None:
        """Record a sign-in or end a session, with its audit entry, in one transaction."""
        event = AuditEvent(
            action=action,
            actor=principal.actor,
            details={"token_id": principal.token_id, "roles": list(principal.roles)},
        )
        with self.node.store.transaction() as tx:
            if action == "web.sign_in":
                self.sessions.record(tx, session, principal.token_id)
            elif not self.sessions.end(tx, session):
                return  # already ended: nothing to say again
            self.node.audit.append(tx, [event])

    async def _sign_out(self, request: Request) -> Response:
        found = await self._session_of(request)
        form = await _read_form(request)
        if found is not None and form is not None and _same_origin(request):
            session, principal = found
            if self.codec.csrf_ok(session, form.get("csrf")):
                await run_in_threadpool(self._audit_session, "web.sign_out", principal, session)
        response = RedirectResponse(BASE + "/login", status_code=303)
        secure = request.url.scheme == "https"
        response.delete_cookie(self._cookie_name(request), path="/" if secure else BASE)
        return response

    async def _session_of(self, request: Request) -> tuple[Any, Principal] | None:
        cookie = request.cookies.get(self._cookie_name(request))
        if not cookie:
            return None
        try:
            session = self.codec.open(cookie, self.node.clock())
            principal = await run_in_threadpool(
                self.node.auth.authenticate_digest, session.token_digest
            )
        except (SessionInvalid, Unauthenticated):
            return None
        if not await run_in_threadpool(self.sessions.live, session):
            return None  # signed out (in this browser or another holding the cookie)
        return session, principal

    # -- pages --
    def _endpoint(self, page: Page) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            found = await self._session_of(request)
            if found is None:
                if page.method == "GET":
                    target = urllib.parse.quote(request.url.path + _query(request), safe="/")
                    return RedirectResponse(f"{BASE}/login?next={target}", status_code=303)
                return self._refusal(401, "Your session has ended: sign in again.")
            session, principal = found
            form: Mapping[str, str] = {}
            if page.method == "POST":
                parsed = await _read_form(request)
                if parsed is None:
                    return self._refusal(415, "Send the dashboard's own form.")
                if not _same_origin(request) or not self.codec.csrf_ok(session, parsed.get("csrf")):
                    return self._refusal(
                        403, "This form did not come from this dashboard (CSRF check failed)."
                    )
                form = parsed
            ctx = Ctx(
                request=request,
                node=self.node,
                principal=principal,
                csrf=self.codec.csrf(session),
                params=request.path_params,
                form=form,
                render_template=self.render,
            )
            return await run_in_threadpool(self._serve, page, ctx)

        return endpoint

    def _serve(self, page: Page, ctx: Ctx) -> Response:
        try:
            admit_principal(self.node, page.rule, ctx.principal, ctx.params)
            return page.handler(ctx)
        except TetherError as exc:
            return ctx.render(
                "error.html",
                status=exc.status_code,
                status_code=exc.status_code,
                message=str(exc),
            )

    def _refusal(self, status: int, message: str) -> Response:
        html = self.render("error.html", ctx=None, status_code=status, message=message)
        return HTMLResponse(html, status_code=status)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self._refusal(404, f"There is no page {request.url.path}.")

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media = _STATIC.get(name)
        if media is None:
            return self._refusal(404, f"There is no file {name}.")
        body = importlib.resources.files("tether.web").joinpath("static", name).read_bytes()
        return Response(body, media_type=media, headers={"cache-control": "max-age=300"})


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


def _safe_next(value: str | None) -> str | None:
    """Only a path of the dashboard itself: never another site (an open redirect)."""
    if not value or not value.startswith(BASE + "/") or value.startswith("//") or "\\" in value:
        return None
    return value


def _same_origin(request: Request) -> bool:
    """A browser says where a form came from; another origin's is refused. SameSite
    already keeps the cookie from a cross-site form: this is the second lock. A client
    that is not a browser sends neither header, and still needs the CSRF token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")
    return True


async def _read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form, each field once; None for anything else."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > FORM_LIMIT):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            return None
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            # Checkbox lists are joined; anything else twice is ambiguous.
            form[key] = f"{form[key]}\n{value}"
        else:
            form[key] = value
    return form


def create_web(node: Any) -> ASGIApp:
    """The dashboard of `node`, to mount at /ui."""
    return Dashboard(node).app()


__all__ = ["CONTENT_SECURITY_POLICY", "Dashboard", "Pages", "create_web"]
