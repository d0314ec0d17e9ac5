"""The dashboard in-process, as a browser that is not one: a client signed in with a token,
which reads the CSRF token off the pages it gets and puts it in the forms it posts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.factories import estate_document
from tests.govern.world import AdminApi, admin_api

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Dash:
    """One signed-in browser session (its own cookie jar)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.csrf: str | None = None

    def sign_in(self, token: str) -> httpx.Response:
        form = self.client.get("/ui/login")
        csrf = _CSRF.search(form.text)
        assert csrf is not None, form.text
        return self.client.post(
            "/ui/login", data={"csrf": csrf.group(1), "token": token}, follow_redirects=False
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        # No `params` unless given: they would replace a query written into `path`.
        response = self.client.get(path, params=params or None, follow_redirects=False)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post with this session's CSRF token (read from the last page)."""
        if self.csrf is None:
            self.get("/ui/")
        body = {"csrf": self.csrf or "", **(data or {})}
        return self.client.post(path, data=body, follow_redirects=False, **kwargs)


@contextmanager
def dashboard(
    tmp_path: Path, document: dict[str, Any] | None = None
) -> Iterator[tuple[AdminApi, Dash]]:
    """A node with `document` applied (default: a small estate), its admin API, and a
    dashboard session signed in as admin."""
    with admin_api(tmp_path) as (node, client, root, clock):
        api = AdminApi(node, client, root, clock)
        api.post("/v1/estate/apply", document or estate_document(8))
        dash = Dash(TestClient(client.app, base_url="http://127.0.0.1"))
        assert dash.sign_in(root).status_code == 303
        yield api, dash


def session_as(api: AdminApi, role: str) -> Dash:
    """Another browser, signed in with a new token of `role`."""
    dash = Dash(TestClient(api.client.app, base_url="http://127.0.0.1"))
    token = str(api.post("/v1/tokens", {"name": role, "roles": [role]})["token"])
    response = dash.sign_in(token)
    assert response.status_code == 303, response.text
    return dash
