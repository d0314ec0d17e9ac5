"""A node in-process behind its real app, with an admin token and a clock tests move:
what the governance tests drive (API calls, tasks, tokens of other roles)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.clock import SettableClock
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings


class AdminApi:
    def __init__(self, node: Tether, client: TestClient, root: str, clock: SettableClock) -> None:
        self.node, self.client, self.root, self.clock = node, client, root, clock
        self.admin = {"Authorization": f"Bearer {root}"}

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        """One request as admin, or with `token`; the response as it is."""
        headers = {"Authorization": f"Bearer {token or self.root}"}
        return self.client.request(method, path, headers=headers, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.client.post(path, json=body, headers=self.admin, **kwargs)
        assert response.is_success, response.text
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=self.admin)
        assert response.is_success, response.text
        return response.json()

    def token(self, role: str) -> str:
        return str(self.post("/v1/tokens", {"name": role, "roles": [role]})["token"])

    def task(self, identity_id: str) -> dict[str, Any]:
        """A task of the identity, started with a join token: its id and task token."""
        join = self.post("/v1/join-tokens", {"identity": identity_id})["token"]
        response = self.client.post(
            "/v1/tasks", json={"name": "run"}, headers={"Authorization": f"Bearer {join}"}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


@contextmanager
def admin_api(tmp_path: Path) -> Iterator[tuple[Tether, TestClient, str, SettableClock]]:
    """An initialized node on SQLite in `tmp_path`, its app's client, the root token and
    the node's clock."""
    clock = SettableClock()
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}")
    node = Tether(settings, clock=clock)
    root = node.initialize(1, 1).root_token
    try:
        with TestClient(create_app(node)) as client:
            yield node, client, root, clock
    finally:
        node.stop()
