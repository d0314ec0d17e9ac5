"""Unseal over HTTP cannot be disturbed: bogus shares change nothing, floods are contained.

The real ASGI app on a SQLite-backed node; only the failure window's clock is injected.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tether.api import create_app
from tether.app import Tether
from tether.barrier import UNSEAL_FAILURE_LIMIT, UNSEAL_FAILURE_WINDOW, UnsealGuard
from tether.config import Settings
from tether.model import AuditRecord

ATTACKER = ("203.0.113.66", 40000)
HOLDER = ("198.51.100.20", 40001)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sealed:
    node: Tether
    app: FastAPI
    clock: Clock
    shares: list[str]

    def client(self, address: tuple[str, int]) -> TestClient:
        return TestClient(self.app, client=address, raise_server_exceptions=False)

    def audit(self) -> list[AuditRecord]:
        return list(self.node.store.iter_audit())


@pytest.fixture
def sealed(tmp_path: Path) -> Iterator[Sealed]:
    """A node initialized 5/3 over HTTP and sealed, as after `tether init`."""
    node = Tether(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}"))
    clock = Clock()
    node.barrier.unseal_guard = UnsealGuard(clock=clock)
    app = create_app(node)
    with TestClient(app, client=HOLDER) as client:
        response = client.post("/v1/sys/init", json={"shares": 5, "threshold": 3})
        assert response.status_code == 200, response.text
        assert client.get("/v1/sys/status").json()["sealed"] is True
        yield Sealed(node, app, clock, response.json()["shares"])
    node.stop()


def _bogus(x: int) -> str:
    """A well-formed share that was never made: 32 random bytes and an x coordinate."""
    return base64.b64encode(os.urandom(32) + bytes([x])).decode()


def _bad_shares(good: str, count: int) -> list[str]:
    """Malformed shares and well-formed bogus ones (some on a real share's x), mixed."""
    raw = base64.b64decode(good)
    malformed = [
        " ",
        "not base64 at all!",
        "AAAA",
        good[:-4],
        base64.b64encode(raw[:-1] + b"\x00").decode(),  # well-shaped, but x = 0
        base64.b64encode(raw + b"\x01").decode(),
    ]
    out = []
    for i in range(count):
        if i % 3 == 0:
            out.append(malformed[(i // 3) % len(malformed)])
        else:
            out.append(_bogus(raw[-1] if i % 3 == 1 else (i % 255) + 1))
    return out


def _unseal(client: TestClient, share: str) -> Any:
    return client.post("/v1/sys/unseal", json={"share": share})


def _failure_entries(records: list[AuditRecord]) -> list[AuditRecord]:
    return [r for r in records if r.action == "sys.unseal.failed"]


def _counted(records: list[AuditRecord], actor: str) -> int:
    return sum(
        json.loads(r.details)["count"] for r in _failure_entries(records) if r.actor == actor
    )


def test_a_thousand_bad_unseal_calls_change_nothing_and_add_a_handful_of_entries(
    sealed: Sealed,
) -> None:
    attacker = sealed.client(ATTACKER)
    first = _unseal(attacker, sealed.shares[0])
    assert first.status_code == 200
    assert first.json()["progress"] == 1
    before = sealed.audit()

    bad = _bad_shares(sealed.shares[1], 1000)
    responses = [_unseal(attacker, share) for share in bad]
    # The API may refuse a share of the wrong shape itself (422) before the node sees it:
    # such a request neither counts nor is audited. Every other one reaches the barrier.
    reached = [r for r in responses if r.status_code != 422]
    assert len(reached) >= 666  # at least every well-formed bogus one
    statuses = [r.status_code for r in reached]
    assert statuses[:UNSEAL_FAILURE_LIMIT] == [400] * UNSEAL_FAILURE_LIMIT
    assert statuses[UNSEAL_FAILURE_LIMIT:] == [429] * (len(reached) - UNSEAL_FAILURE_LIMIT)
    assert {r.json()["error"] for r in reached[:UNSEAL_FAILURE_LIMIT]} == {"invalid_share"}
    limited = reached[-1].json()
    assert limited["error"] == "rate_limited"
    assert "try again in 60 s" in limited["message"]
    failed = len(reached)

    status = attacker.get("/v1/sys/status").json()
    assert (status["sealed"], status["progress"]) == (True, 1)
    # Even a good share from the flooding source is refused unread until its window ends.
    assert _unseal(attacker, sealed.shares[1]).status_code == 429
    assert attacker.get("/v1/sys/status").json()["progress"] == 1

    after = sealed.audit()
    assert len(after) - len(before) <= 5
    assert [json.loads(r.details)["count"] for r in _failure_entries(after)] == [1, 9]

    sealed.clock.now += UNSEAL_FAILURE_WINDOW  # the holder waits out the window
    assert _unseal(attacker, sealed.shares[1]).json()["progress"] == 2
    opened = _unseal(attacker, sealed.shares[3]).json()
    assert opened["sealed"] is False

    records = sealed.audit()
    assert len(records) - len(before) <= 5
    assert _counted(records, f"remote:{ATTACKER[0]}") == failed + 1
    closed = json.loads(_failure_entries(records)[-1].details)
    refused = failed + 1 - UNSEAL_FAILURE_LIMIT
    assert closed["window"] == "closed"
    assert closed["reasons"] == {
        "refused unread: too many failed attempts from this source": refused
    }
    assert records[-1].action == "sys.unseal"
    assert json.loads(records[-1].details) == {"term": 1}
    text = "\n".join(f"{r.reason} {r.details}" for r in records)
    for share in [*sealed.shares, *bad]:
        if share.strip():
            assert share not in text
    verification = sealed.node.verify_audit()
    assert verification.ok, verification.problem


def test_a_second_source_is_not_blocked_by_the_first_ones_failures(sealed: Sealed) -> None:
    attacker, holder = sealed.client(ATTACKER), sealed.client(HOLDER)
    assert _unseal(holder, sealed.shares[2]).json()["progress"] == 1
    responses = [_unseal(attacker, _bogus(i % 255 + 1)) for i in range(50)]
    assert responses[-1].status_code == 429

    assert _unseal(holder, sealed.shares[4]).json()["progress"] == 2
    refused = _unseal(holder, _bogus(5))
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_share"
    assert _unseal(attacker, sealed.shares[0]).status_code == 429
    assert holder.get("/v1/sys/status").json()["progress"] == 2

    assert _unseal(holder, sealed.shares[0]).json()["sealed"] is False
    records = sealed.audit()
    assert _counted(records, f"remote:{ATTACKER[0]}") == 51
    assert _counted(records, f"remote:{HOLDER[0]}") == 1
    assert len(_failure_entries(records)) == 4  # attacker: first, limit, rest; holder: first
    assert [r.actor for r in records if r.action == "sys.unseal"] == [f"remote:{HOLDER[0]}"]
    assert sealed.node.verify_audit().ok
