"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
`tether serve`, with a small estate, tokens of every role, and a log of every request the
pages make (so a test can say no request left for another origin)."""

from __future__ import annotations

import copy
import os
import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.cli.running import ACCESS, EXCHANGE, running_server
from tests.factories import estate_document
from tests.scenario.harness import Server
from tests.services import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

#: Debian's Chromium; Playwright's own browser download is never used.
CHROMIUM = "/usr/bin/chromium"
#: The size of the screenshots and of every test's window.
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

#: The identity the flow works on: team-a's, with a token profile and a postgres profile.
LEASED = "orders-batch"
#: Another owner's identity (an owner:team-a token must not see it).
OTHER_OWNERS = "billing-export"
#: The target of `LEASED`'s postgres profile (not registered: lineage needs only the name).
TARGET = "db"


def chromium_args() -> list[str]:
    # Chromium's sandbox refuses to run as root (containers): only then is it turned off.
    return ["--no-sandbox"] if os.geteuid() == 0 else []


def require_chromium() -> str:
    """The Chromium to drive, or a skip (a failure under CI=true) saying why not."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        hint = f" (there is one at {found})" if found else ""
        unavailable(
            f"browser tests need Debian's Chromium at {CHROMIUM}{hint}: "
            "apt-get install chromium (make unit does it)"
        )
    return CHROMIUM


def browser_estate() -> dict[str, Any]:
    """The factory estate (owners team-a and team-b, identities of every kind, some with
    findings) plus a `token` profile and two service accounts to lease from."""
    doc = copy.deepcopy(estate_document(8))
    doc["profiles"].append({"id": "push", "provider": "token", "scopes": ["push"], "max_ttl": "1h"})
    common = {
        "kind": "service_account",
        "environment": "prod",
        "region": "eu-west-1",
        "criticality": "high",
    }
    doc["identities"] += [
        {
            **common,
            "id": LEASED,
            "owner": "team-a",
            "purpose": "Exports the night's orders to the warehouse database",
            "justification": "CHG-2041",
            "entitlements": [{"profile": "push"}, {"profile": "db-ro"}],
        },
        {
            **common,
            "id": OTHER_OWNERS,
            "owner": "team-b",
            "purpose": "Sends the billing export to the payment provider",
            "justification": "CHG-2042",
            "entitlements": [{"profile": "push"}],
        },
    ]
    return doc


@dataclass
class Node:
    """A running node and what the tests do to it through its HTTP API."""

    server: Server
    directory: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return self.server.addr

    @property
    def origin(self) -> str:
        parts = urllib.parse.urlsplit(self.addr)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def admin(self) -> str:
        assert self.server.token is not None
        return self.server.token

    def api(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        """An API call as admin (or `token`); its JSON (None for an empty answer)."""
        headers = {"authorization": f"Bearer {token or self.admin}"}
        answer = httpx.request(method, self.addr + path, headers=headers, timeout=30, **kwargs)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def token_for(self, role: str) -> str:
        """A token with `role`, named after it (the root token for admin)."""
        return self.admin if role == "admin" else self.named_token(role, role)

    def named_token(self, name: str, role: str) -> str:
        """The token called `name`, with `role` (made the first time it is asked for)."""
        if name not in self.tokens:
            created = self.api("POST", "/v1/tokens", json={"name": name, "roles": [role]})
            self.tokens[name] = str(created["token"])
        return self.tokens[name]

    def actor_named(self, name: str) -> str:
        """The audit actor of the token called `name` ("root": the root token)."""
        for record in self.api("GET", "/v1/tokens"):
            if record["name"] == name and record["revoked_at"] is None:
                return f"token:{record['id']}({name})"
        raise AssertionError(f"no token named {name}")

    # -- leases --
    def start_task(self, identity: str) -> dict[str, Any]:
        """A started task of `identity` (`id`, `token`), attested with a join token."""
        join = self.api("POST", "/v1/join-tokens", json={"identity": identity})
        started = httpx.post(
            f"{self.addr}/v1/tasks",
            headers={"authorization": f"Bearer {join['token']}"},
            json={"name": "browser-test"},
            timeout=30,
        )
        assert started.status_code == 201, started.text
        return dict(started.json())

    def issue(self, task: dict[str, Any], profile: str = "push") -> tuple[str, str]:
        """An opaque token for `profile` under `task`: (its lease id, the token)."""
        issued = httpx.post(
            f"{self.addr}/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": task["token"],
                "subject_token_type": ACCESS,
                "audience": profile,
            },
            timeout=30,
        )
        assert issued.status_code == 200, issued.text
        body = issued.json()
        return str(body["tether_lease"]), str(body["access_token"])

    def lease(self, identity: str = LEASED) -> tuple[str, str]:
        """A live lease of `identity`: (lease id, token)."""
        return self.issue(self.start_task(identity))

    def active(self, token: str) -> bool:
        """Introspection's answer for `token`."""
        answer = httpx.post(
            f"{self.addr}/oauth2/introspect",
            headers={"authorization": f"Bearer {self.admin}"},
            data={"token": token},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["active"])

    def lease_state(self, lease_id: str) -> str:
        return str(self.api("GET", f"/v1/leases/{lease_id}")["state"])

    def audit(self, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api("GET", "/v1/audit", params=params)["items"]
        return items


@contextmanager
def running_node(directory: Path) -> Iterator[Node]:
    """A real server with the browser estate applied and its findings evaluated."""
    with running_server(directory, document=browser_estate()) as server:
        node = Node(server, directory)
        node.api("POST", "/v1/findings/evaluate")
        yield node


@dataclass
class NetworkLog:
    """Every request a browser context made, to say none left for another origin."""

    origin: str
    #: Other origins a test means to visit (an attacker's page).
    allowed: set[str] = field(default_factory=set)
    urls: list[str] = field(default_factory=list)

    def record(self, request: Any) -> None:
        self.urls.append(str(request.url))

    def foreign(self) -> list[str]:
        """The requests that went to neither the node nor an allowed origin."""
        kept = {self.origin, *self.allowed}
        out = []
        for address in self.urls:
            parts = urllib.parse.urlsplit(address)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if f"{parts.scheme}://{parts.netloc}" not in kept:
                out.append(address)
        return out


def sign_in(page: Any, node: Node, token: str) -> None:
    """Sign in on /ui/login as a person would: paste the token, press the button."""
    page.goto(f"{node.addr}/ui/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{node.addr}/ui/**")
    assert "/ui/login" not in page.url, page.content()


def post_forms(page: Any) -> list[str]:
    """The action of every form on the page that POSTs, but sign-out's."""
    actions: list[str] = page.eval_on_selector_all(
        "form",
        "forms => forms.filter(f => f.method.toLowerCase() === 'post')"
        ".map(f => new URL(f.action, location.href).pathname)",
    )
    return [a for a in actions if a != "/ui/logout"]
