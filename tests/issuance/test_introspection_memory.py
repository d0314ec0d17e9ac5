"""Introspection from memory (the HTTP route answers a token seen live moments ago on its
event loop): it says what the store would say, or nothing, never a stale "active"."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tether._internal.timeutil import utcnow
from tether.app import Tether
from tether.config import Settings
from tether.lease import RevokeTarget
from tether.model import Identity, Kind, Lease, LeaseState


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Tether]:
    n = Tether(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'tether.db'}"))
    n.initialize(1, 1)
    n.signing_keys.ensure_current()
    n.start()  # its change feed: memory vouches for nothing until the feed is current
    yield n
    n.stop()


def _remembered(node: Tether, token: str) -> dict[str, Any] | None:
    """Memory's answer once the feed has caught up (it polls every 250 ms here)."""
    deadline = time.monotonic() + 10
    while (answer := node.issuance.introspect_from_memory(token)) is None:
        if time.monotonic() > deadline:
            return None
        node.issuance.introspect(token)  # the read that memory remembers
        time.sleep(0.05)
    return answer


def _stored_token(node: Tether, lease_id: str) -> str:
    now = utcnow()
    lease = Lease(
        lease_id,
        "svc",
        "team",
        "jwt",
        now,
        now + dt.timedelta(minutes=5),
        LeaseState.ACTIVE,
        audience="https://api.example.com",
        scopes=("read",),
    )
    with node.store.transaction() as tx:
        tx.insert_leases([lease])
    identity = Identity("svc", Kind.WORKLOAD, "team", "p", "j", "prod")
    return node.jwt_provider.issue(lease, identity, None).secret


def test_memory_answers_as_the_store_did_and_forgets_a_revoked_token(node: Tether) -> None:
    token = _stored_token(node, "lse_mem")
    issuance = node.issuance
    # Never verified nor read here: memory cannot tell.
    assert issuance.introspect_from_memory(token) is None
    answer = issuance.introspect(token)
    assert answer["active"] is True and answer["jti"] == "lse_mem"
    assert _remembered(node, token) == answer

    assert node.leases.revoke(RevokeTarget(lease_id="lse_mem"), "test", "test") == 1
    assert issuance.introspect_from_memory(token) is None
    assert issuance.introspect(token) == {"active": False}


def test_memory_knows_nothing_of_unknown_tokens_or_a_sealed_node(node: Tether) -> None:
    token = _stored_token(node, "lse_seal")
    assert node.issuance.introspect(token)["active"] is True
    assert _remembered(node, token) is not None
    assert node.issuance.introspect_from_memory("not-a-token") is None
    assert node.issuance.introspect_from_memory(token + "x") is None
    with node.store.transaction() as tx:
        root, _ = node.auth.issue(tx, "t", ["admin"], "test")
    node.seal(node.auth.authenticate(root))
    # Sealed, the signing keys are forgotten: a remembered verification verifies nothing.
    assert node.issuance.introspect_from_memory(token) is None
