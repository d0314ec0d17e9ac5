"""Time moved by the node's clock, not by sleeping: the composition root hands one clock
to every service that decides by the time, so a test sets it forward and one sweep ends
what that time ended.

A real node (SQLite), the real API in process, no background worker: nothing happens
between the test's steps unless the test calls for it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.clock import SettableClock
from tether._internal.timeutil import format_time
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
FAR = "2099-01-31"


def estate(*, approval_expires: str = FAR, contract_ends: str = FAR) -> dict[str, Any]:
    return {
        "version": 1,
        "owners": [{"id": "team-payments", "contact": "payments@example.com"}],
        "vendors": [{"id": "acme", "contract_ends": contract_ends}],
        "profiles": [
            {"id": "opaque-api", "provider": "token", "scopes": ["metrics:push"], "max_ttl": "1h"}
        ],
        "identities": [
            {
                "id": "acme-agent",
                "kind": "service_account",
                "owner": "team-payments",
                "vendor": "acme",
                "purpose": "Vendor service account that pushes metrics",
                "justification": "VND-1",
                "environment": "prod",
                "approval": {"by": "dana@example.com", "expires": approval_expires},
                "entitlements": [{"profile": "opaque-api"}],
            }
        ],
    }


class Node:
    def __init__(self, node: Tether, client: TestClient, root: str, clock: SettableClock):
        self.node, self.client, self.root, self.clock = node, client, root, clock

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.root}"}

    def apply(self, doc: dict[str, Any]) -> None:
        response = self.client.post("/v1/estate/apply", json=doc, headers=self.admin())
        assert response.status_code == 200, response.text

    def start_task(self, ttl: str) -> dict[str, Any]:
        join = self.client.post(
            "/v1/join-tokens", json={"identity": "acme-agent"}, headers=self.admin()
        )
        assert join.status_code == 201, join.text
        task = self.client.post(
            "/v1/tasks",
            json={"name": "push", "ttl": ttl},
            headers={"Authorization": f"Bearer {join.json()['token']}"},
        )
        assert task.status_code == 201, task.text
        return dict(task.json())

    def issue(self, task_token: str) -> dict[str, Any]:
        response = self.client.post(
            "/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": task_token,
                "subject_token_type": ACCESS,
                "audience": "opaque-api",
            },
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def active(self, token: str) -> bool:
        response = self.client.post(
            "/oauth2/introspect", data={"token": token}, headers=self.admin()
        )
        assert response.status_code == 200, response.text
        return bool(response.json()["active"])

    def lease(self, lease_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/leases/{lease_id}", headers=self.admin())
        assert response.status_code == 200, response.text
        return dict(response.json())

    def audit_of(self, lease_id: str) -> list[dict[str, Any]]:
        items = self.client.get("/v1/audit", params={"limit": 10000}, headers=self.admin())
        return [
            e
            for e in items.json()["items"]
            if e["action"] in ("lease.expire", "lease.revoke")
            and json.loads(e["details"]).get("lease_id") == lease_id
        ]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    clock = SettableClock()
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}")
    tether = Tether(settings, clock=clock)
    root = tether.initialize(1, 1).root_token
    with TestClient(create_app(tether)) as client:
        yield Node(tether, client, root, clock)
    tether.stop()


def _ended_by_one_sweep(node: Node, lease_id: str, state: str, reason: str) -> None:
    """Still live until the sweep runs; one sweep ends it, audited at the clock's time."""
    assert node.lease(lease_id)["state"] == "active"
    node.node.sweep()
    lease = node.lease(lease_id)
    assert lease["state"] == state
    assert reason in lease["end_reason"]
    (entry,) = node.audit_of(lease_id)
    assert entry["ts"] == format_time(node.clock.now)
    assert reason in entry["reason"]


def test_a_lease_expires_when_the_clock_passes_its_end(node: Node) -> None:
    node.apply(estate())
    issued = node.issue(node.start_task("2h")["token"])
    assert issued["expires_in"] == 3600
    node.clock.advance(minutes=59)
    node.node.sweep()
    assert node.active(issued["access_token"])
    assert node.lease(issued["tether_lease"])["state"] == "active"

    node.clock.advance(minutes=2)
    # Introspection decides by the same clock before any sweep ...
    assert not node.active(issued["access_token"])
    # ... and one sweep ends the lease itself.
    _ended_by_one_sweep(node, issued["tether_lease"], "expired", "end of life")


def test_a_task_deadline_passing_ends_the_task_and_its_credentials(node: Node) -> None:
    node.apply(estate())
    task = node.start_task("30m")
    issued = node.issue(task["token"])
    assert issued["tether_bounded_by"] == "task deadline"
    node.clock.advance(minutes=31)
    _ended_by_one_sweep(node, issued["tether_lease"], "expired", "end of life")
    ended = node.client.get(f"/v1/tasks/{task['id']}", headers=node.admin()).json()
    assert ended["status"] == "ended"
    assert ended["end_reason"] == "task deadline passed"
    assert ended["ended_at"] == format_time(node.clock.now)
    assert not node.active(task["token"])


@pytest.mark.parametrize("justification", ["approval", "vendor"])
def test_a_justification_ending_later_ends_the_credential_at_that_time(
    node: Node, justification: str
) -> None:
    """The estate changes after issuance: the approval (or the vendor's contract) now ends
    in ten minutes, well before the lease would. When the clock gets there, one sweep
    revokes what the justification no longer covers."""
    node.apply(estate())
    issued = node.issue(node.start_task("2h")["token"])
    ends = format_time(node.clock.now.replace(microsecond=0) + _minutes(10))
    key = "approval_expires" if justification == "approval" else "contract_ends"
    node.apply(estate(**{key: ends}))
    node.clock.advance(minutes=9)
    node.node.sweep()
    assert node.active(issued["access_token"])

    node.clock.advance(minutes=2)
    reason = "approval by dana@example.com expired" if justification == "approval" else "acme"
    _ended_by_one_sweep(node, issued["tether_lease"], "revoked", reason)
    assert not node.active(issued["access_token"])


def _minutes(n: int) -> dt.timedelta:
    return dt.timedelta(minutes=n)
