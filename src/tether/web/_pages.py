"""How a dashboard page is declared and what its handler is given.

A page names who may open it and whether it changes state, in the same terms as the API's
access table (`tether.api._access.Rule`): the auditor can never reach a page that changes
state, and a page naming an identity, task or lease in its path admits an `owner:` token
only to its own owners' objects. Handlers are thin: every change is a service call, made
with the signed-in principal as the actor.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tether.api._access import Rule, Subject, Who
from tether.auth import Principal
from tether.errors import NotFoundError

#: The dashboard lives under this path; its cookie is scoped to it.
BASE = "/ui"

_READERS = (Who.ADMIN, Who.AUDITOR, Who.OWNER)
_ACTORS = (Who.ADMIN, Who.OWNER)


@dataclass(frozen=True, slots=True)
class Page:
    method: str
    path: str
    handler: Callable[[Ctx], Response]
    rule: Rule


class Pages:
    """A module's pages; `tether.web._app` puts every module's together."""

    def __init__(self) -> None:
        self.pages: list[Page] = []

    def _add(
        self, method: str, path: str, who: tuple[Who, ...], writes: bool, subject: Subject | None
    ) -> Callable[[Callable[[Ctx], Response]], Callable[[Ctx], Response]]:
        def register(handler: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
            rule = Rule(frozenset(who), writes, subject)
            self.pages.append(Page(method, BASE + path, handler, rule))
            return handler

        return register

    def view(
        self, path: str, *who: Who, subject: Subject | None = None
    ) -> Callable[[Callable[[Ctx], Response]], Callable[[Ctx], Response]]:
        """A page that shows (GET); by default admin, auditor and owners may open it."""
        return self._add("GET", path, who or _READERS, False, subject)

    def action(
        self, path: str, *who: Who, subject: Subject | None = None
    ) -> Callable[[Callable[[Ctx], Response]], Callable[[Ctx], Response]]:
        """A form's target (POST); by default admin and owners. CSRF-checked."""
        return self._add("POST", path, who or _ACTORS, True, subject)


@dataclass(slots=True)
class Ctx:
    """One request to a page, as its handler sees it."""

    request: Request
    node: Any
    principal: Principal
    csrf: str
    params: Mapping[str, str]
    form: Mapping[str, str] = field(default_factory=dict)
    render_template: Callable[..., str] | None = None

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query_params

    @property
    def actor(self) -> str:
        return self.principal.actor

    @property
    def may_act(self) -> bool:
        """Whether this principal gets action buttons at all (the auditor never does)."""
        return self.principal.is_admin or bool(self.principal.owned())

    def may_act_on(self, owner_id: str) -> bool:
        """Whether this principal may change what `owner_id` owns."""
        return self.principal.is_admin or owner_id in self.principal.owned()

    def now(self) -> dt.datetime:
        now: dt.datetime = self.node.clock()
        return now

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        assert self.render_template is not None
        html = self.render_template(template, ctx=self, **values)
        return HTMLResponse(html, status_code=status)

    def redirect(self, path: str, notice: str | None = None) -> RedirectResponse:
        """After a change: see its result on `path` (303, so a reload does not repeat it).
        The notice is signed for this session: a link from elsewhere cannot put words
        into the dashboard's mouth ("paste your token at ...")."""
        if notice:
            sep = "&" if "?" in path else "?"
            signed = {"notice": notice, "notice_sig": self._notice_sig(notice)}
            path = f"{path}{sep}{urllib.parse.urlencode(signed)}"
        return RedirectResponse(path, status_code=303)

    def _notice_sig(self, notice: str) -> str:
        return hmac.new(self.csrf.encode(), notice.encode(), hashlib.sha256).hexdigest()[:32]

    @property
    def notice(self) -> str | None:
        """The result of the last change, when this session's own redirect said it."""
        notice, sig = self.query.get("notice"), self.query.get("notice_sig", "")
        if not notice or not hmac.compare_digest(self._notice_sig(notice).encode(), sig.encode()):
            return None
        return notice

    def field(self, name: str, limit: int = 1024) -> str:
        """A form field, stripped; a missing one is "" (the service names what is wrong)."""
        return self.form.get(name, "").strip()[:limit]


def visible_identity(principal: Principal, view: Any, identity_id: str) -> Any:
    """The identity in the estate `view`, for a principal that may see it; otherwise the
    same 404 as for a missing one (an owner learns nothing of others')."""
    identity = view.identities.get(identity_id)
    if identity is None or not principal.may_see_owner(identity.owner_id):
        raise NotFoundError(f"no identity {identity_id!r}")
    return identity


def url(path: str, **query: Any) -> str:
    """A dashboard URL with its query, leaving out empty values."""
    kept = {k: v for k, v in query.items() if v not in (None, "", False)}
    tail = f"?{urllib.parse.urlencode(kept)}" if kept else ""
    return f"{BASE}{path}{tail}"
