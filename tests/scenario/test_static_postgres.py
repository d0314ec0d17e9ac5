"""A PostgreSQL static role, rotated by alternating two users so the overlap is real."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.pg_cluster import PgCluster
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings

pytestmark = pytest.mark.service


@pytest.fixture
def api(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[tuple[TestClient, dict[str, str]]]:
    node = Tether(
        Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}", sweep_interval=0.1)
    )
    admin = {"Authorization": f"Bearer {node.initialize(1, 1).root_token}"}
    node.start()
    with TestClient(create_app(node)) as client:
        estate = {
            "version": 1,
            "owners": [{"id": "ops", "contact": "ops@example.com"}],
            "identities": [
                {
                    "id": "billing",
                    "kind": "legacy_static",
                    "owner": "ops",
                    "purpose": "Legacy billing app",
                    "justification": "LEG-9",
                    "environment": "prod",
                }
            ],
        }
        assert client.post("/v1/estate/apply", json=estate, headers=admin).is_success
        assert client.post(
            "/v1/targets",
            headers=admin,
            json={"name": "payments-db", "kind": "postgres", "dsn": pg_cluster.admin_dsn},
        ).is_success
        created = client.post(
            "/v1/credentials",
            headers=admin,
            json={
                "id": "billing-db",
                "kind": "postgres-static",
                "owner": "ops",
                "readers": ["billing"],
                "overlap": "2s",
                "rotate_every": None,
                "target": "payments-db",
                "users": ["billing_blue", "billing_green"],
            },
        )
        assert created.status_code == 201, created.text
        yield client, admin
    node.stop()


def _read(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    join = client.post("/v1/join-tokens", json={"identity": "billing"}, headers=admin).json()
    task = client.post(
        "/v1/tasks", json={"name": "billing"}, headers={"Authorization": f"Bearer {join['token']}"}
    ).json()
    response = client.get(
        "/v1/credentials/billing-db", headers={"Authorization": f"Bearer {task['token']}"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_two_users_alternate_and_a_late_consumer_is_named(
    api: tuple[TestClient, dict[str, str]], pg_cluster: PgCluster
) -> None:
    client, admin = api
    first = _read(client, admin)
    assert first["username"] == "billing_blue"
    late = psycopg.connect(
        pg_cluster.dsn(first["username"], first["value"]), application_name="nightly-report"
    )
    assert (
        client.post("/v1/credentials/billing-db/rotate", json={}, headers=admin).status_code == 200
    )
    second = _read(client, admin)
    assert second["username"] == "billing_green"
    # The consumer that switches works at once, before and after the overlap ends.
    with psycopg.connect(pg_cluster.dsn(second["username"], second["value"])) as switched:
        assert switched.execute("SELECT 1").fetchone() == (1,)
    late.execute("SELECT 1")  # still inside the overlap: the old user works

    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "the late consumer was never cut off"
        try:
            late.execute("SELECT 1")
        except psycopg.OperationalError:
            break
        time.sleep(0.05)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_cluster.dsn(first["username"], first["value"]), connect_timeout=5)
    alerts = client.get("/v1/alerts", headers=admin).json()["items"]
    named = [a for a in alerts if a["action"] == "alert.old_version_in_use"]
    assert named and "app=nightly-report" in json.loads(named[0]["details"])["caller"]
    with psycopg.connect(pg_cluster.dsn(second["username"], second["value"])) as switched:
        assert switched.execute("SELECT 1").fetchone() == (1,)
