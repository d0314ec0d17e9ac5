"""Staged rotation of a static (legacy) secret, through the API with the worker running.

Two consumers share a vaulted secret. It is rotated with an overlap window: the one that
switches within the overlap never fails; the one still on the old version after the
overlap is refused, and the alert names it. Exposure rotates at once with no overlap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.api import create_app
from tether.app import Tether
from tether.config import Settings


def _estate() -> dict[str, Any]:
    base = {
        "owner": "ops",
        "purpose": "Uploads settlements",
        "justification": "LEG-3",
        "environment": "prod",
        "kind": "legacy_static",
    }
    return {
        "version": 1,
        "owners": [{"id": "ops", "contact": "ops@example.com"}],
        "identities": [
            {**base, "id": "settlement-batch"},
            {**base, "id": "report-batch"},
            {**base, "id": "stranger"},
        ],
    }


class Api:
    def __init__(self, node: Tether, client: TestClient, root: str) -> None:
        self.node, self.client, self.root = node, client, root

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.root}"}

    def task_token(self, identity: str) -> str:
        join = self.client.post(
            "/v1/join-tokens", json={"identity": identity}, headers=self.admin()
        ).json()["token"]
        return str(
            self.client.post(
                "/v1/tasks", json={"name": "run"}, headers={"Authorization": f"Bearer {join}"}
            ).json()["token"]
        )

    def read(self, token: str) -> Any:
        return self.client.get(
            "/v1/credentials/mainframe", headers={"Authorization": f"Bearer {token}"}
        )

    def verify(self, secret: str, caller: str) -> dict[str, Any]:
        response = self.client.post(
            "/v1/credentials/mainframe/verify",
            json={"secret": secret, "caller": caller},
            headers=self.admin(),
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.client.get("/v1/alerts", headers=self.admin()).json()["items"])

    def versions(self) -> dict[int, str]:
        body = self.client.get("/v1/credentials/mainframe", headers=self.admin()).json()
        return {v["number"]: v["state"] for v in body["versions"]}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    node = Tether(
        Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}", sweep_interval=0.1)
    )
    root = node.initialize(1, 1).root_token
    node.start()
    with TestClient(create_app(node)) as client:
        api = Api(node, client, root)
        assert client.post("/v1/estate/apply", json=_estate(), headers=api.admin()).is_success
        created = client.post(
            "/v1/credentials",
            headers=api.admin(),
            json={
                "id": "mainframe",
                "owner": "ops",
                "overlap": "2s",
                "rotate_every": None,
                "readers": ["settlement-batch", "report-batch"],
            },
        )
        assert created.status_code == 201, created.text
        yield api
    node.stop()


def test_a_consumer_that_switches_in_the_overlap_never_fails(api: Api, tmp_path: Path) -> None:
    early, late = api.task_token("settlement-batch"), api.task_token("report-batch")
    first = api.read(early).json()
    assert first["version"] == 1 and api.read(late).json()["value"] == first["value"]
    assert api.read(api.task_token("stranger")).status_code == 403

    rotated = api.client.post("/v1/credentials/mainframe/rotate", json={}, headers=api.admin())
    assert rotated.status_code == 200
    assert api.versions() == {1: "previous", 2: "current"}

    # The early consumer switches within the overlap; the late one keeps the old value.
    second = api.read(early).json()
    assert second["version"] == 2 and second["value"] != first["value"]
    assert api.verify(second["value"], "settlement-batch@10.0.0.7")["valid"]
    during = api.verify(first["value"], "report-batch@10.0.0.9")
    assert during == {"valid": True, "version": 1, "state": "previous"}
    assert any("report-batch@10.0.0.9" in (a["reason"] or "") for a in api.alerts())

    deadline = time.monotonic() + 15
    while api.versions()[1] != "retired":
        assert time.monotonic() < deadline, "the overlap never ended"
        time.sleep(0.05)
    after = api.verify(first["value"], "report-batch@10.0.0.9")
    assert after == {"valid": False, "version": 1, "state": "retired"}
    named = [a for a in api.alerts() if json.loads(a["details"]).get("state") == "retired"]
    assert named and "report-batch@10.0.0.9" in named[-1]["reason"]
    assert api.verify(second["value"], "settlement-batch@10.0.0.7")["valid"]  # never failed

    # Nothing of either value is stored in the clear.
    data = b"".join(p.read_bytes() for p in tmp_path.glob("t.db*"))
    assert first["value"].encode() not in data and second["value"].encode() not in data


def test_exposure_rotates_at_once_without_overlap(api: Api) -> None:
    token = api.task_token("settlement-batch")
    leaked = api.read(token).json()["value"]
    exposed = api.client.post(
        "/v1/credentials/mainframe/exposed",
        json={"evidence": "found in a public gist"},
        headers=api.admin(),
    )
    assert exposed.status_code == 200
    assert api.versions() == {1: "retired", 2: "current"}
    assert api.verify(leaked, "attacker")["valid"] is False
    assert {"alert.exposure", "alert.old_version_used"} <= {a["action"] for a in api.alerts()}
    assert api.read(token).json()["version"] == 2
    assert api.client.get("/v1/audit/verify", headers=api.admin()).json()["ok"]


def test_bad_credential_definitions_are_refused_with_the_field(api: Api) -> None:
    refused = api.client.post(
        "/v1/credentials",
        headers=api.admin(),
        json={"id": "bad id!", "owner": "ops", "readers": ["settlement-batch"]},
    )
    assert refused.status_code == 422 and "id" in refused.json()["message"]
    no_readers = api.client.post(
        "/v1/credentials", headers=api.admin(), json={"id": "x", "owner": "ops", "readers": []}
    )
    assert no_readers.status_code == 422
    duplicate = api.client.post(
        "/v1/credentials",
        headers=api.admin(),
        json={"id": "mainframe", "owner": "ops", "readers": ["settlement-batch"]},
    )
    assert duplicate.status_code == 409 and "exists" in duplicate.json()["message"]
