"""One justification rule: for generated identities and times, the lifecycle sweep
revokes exactly the credentials issuance refuses to extend or derive from, on the
in-memory store and on SQLite (whose prefilter is an indexed query).

Each identity is justified when its credentials are issued; then its estate changes
(status, approval expiry, own expiry, vendor contract end, owner removed, moved to
another region, environment, owner or vendor) and time moves to a generated instant.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.issuance.stack import Stack
from tether._internal.timeutil import format_time
from tether.issuance import ExchangeRequest, IssuanceError
from tether.model import LeaseState
from tether.providers import ACCESS_TOKEN_TYPE

T0 = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.UTC)
DAY = 24 * 60  # minutes: tasks last at most a day, so every credential ends by then
MOVES = (None, "region", "environment", "owner", "vendor")
_ids = itertools.count()


@dataclass(frozen=True)
class Change:
    status: str
    approval_ends: int | None  # minutes after T0
    identity_ends: int | None
    vendor_ends: int | None  # None: the identity has no vendor
    owner_removed: bool
    moved: str | None


changes = st.builds(
    Change,
    status=st.sampled_from(["active", "active", "suspended", "retired"]),
    approval_ends=st.none() | st.integers(1, DAY),
    identity_ends=st.none() | st.integers(1, DAY),
    vendor_ends=st.none() | st.integers(1, DAY),
    owner_removed=st.booleans(),
    moved=st.sampled_from(MOVES),
)


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp(request.param)
    url = "memory://" if request.param == "memory" else f"sqlite:///{home / 't.db'}"
    made = Stack(home, url, T0)
    with made.node.store.transaction() as tx:
        tx.put_estate_object(
            "profile",
            "opaque",
            {"id": "opaque", "provider": "token", "scopes": ["push"], "max_ttl": "30d"},
        )
        tx.put_estate_object("owner", "spare-owner", {"id": "spare-owner", "contact": "s@x.test"})
        tx.put_estate_object(
            "vendor",
            "spare-vendor",
            {"id": "spare-vendor", "contract_ends": "2099-01-01T00:00:00Z"},
        )
    yield made
    made.close()


def _at(minutes: int | None) -> str | None:
    return None if minutes is None else format_time(T0 + dt.timedelta(minutes=minutes))


def _spec(name: str, change: Change, *, before: bool) -> dict[str, object]:
    """The identity when its credentials are issued (`before`), and after the change."""
    spec: dict[str, object] = {
        "id": name,
        "kind": "api_key",
        "owner": f"{name}-owner",
        "purpose": "generated",
        "justification": "PROP-1",
        "environment": "prod",
        "region": "eu-west-1",
        "status": "active",
        "entitlements": [{"profile": "opaque"}],
    }
    if change.vendor_ends is not None:
        spec["vendor"] = f"{name}-vendor"
    if change.approval_ends is not None:
        spec["approval"] = {"by": "dana@example.com", "expires": _at(change.approval_ends)}
    if change.identity_ends is not None:
        spec["expires"] = _at(change.identity_ends)
    if before:
        return spec
    spec["status"] = change.status
    moved = {
        None: {},
        "region": {"region": "us-east-1"},
        "environment": {"environment": "staging"},
        "owner": {"owner": "spare-owner"},
        "vendor": {"vendor": "spare-vendor"},
    }[change.moved]
    return {**spec, **moved}


def _issue(stack: Stack, name: str, change: Change) -> tuple[str, str, str]:
    """Credentials issued while the identity is justified: a task token and an opaque
    token from it. Returns (task token, its lease id, the opaque lease id)."""
    with stack.node.store.transaction() as tx:
        tx.put_estate_object(
            "owner", f"{name}-owner", {"id": f"{name}-owner", "contact": "o@x.test"}
        )
        if change.vendor_ends is not None:
            tx.put_estate_object(
                "vendor",
                f"{name}-vendor",
                {"id": f"{name}-vendor", "contract_ends": _at(change.vendor_ends)},
            )
        tx.put_identity(_spec(name, change, before=True))
    stack.node.view.reload()
    stack.clock.now = T0
    join, _ = stack.issuance.create_join_token(name, dt.timedelta(hours=1), "test")
    started = stack.issuance.start_task(join, "run", dt.timedelta(hours=24), None)
    token = stack.issuance.exchange(
        ExchangeRequest(started.token, ACCESS_TOKEN_TYPE, audience="opaque")
    )
    assert started.token_lease is not None
    return started.token, started.token_lease.id, token.lease_id


def _change(stack: Stack, name: str, change: Change) -> None:
    with stack.node.store.transaction() as tx:
        tx.put_identity(_spec(name, change, before=False))
        if change.owner_removed:
            tx.delete_estate_object("owner", f"{name}-owner")
    stack.node.view.reload()


def _refused(call: object) -> bool:
    assert callable(call)
    try:
        call()
    except IssuanceError:
        return True
    return False


def _state(stack: Stack, lease_id: str) -> LeaseState:
    with stack.node.store.read() as tx:
        lease = tx.get_lease(lease_id)
    assert lease is not None
    return lease.state


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(identities=st.lists(changes, min_size=1, max_size=4), minutes=st.integers(0, DAY - 1))
def test_the_sweep_revokes_exactly_what_issuance_refuses(
    stack: Stack, identities: list[Change], minutes: int
) -> None:
    run = next(_ids)
    issued = []
    for index, change in enumerate(identities):
        name = f"p{run:05d}-{index}"
        issued.append((name, change, *_issue(stack, name, change)))
    for name, change, *_ in issued:
        _change(stack, name, change)

    stack.clock.now = T0 + dt.timedelta(minutes=minutes)
    refused = {}
    for *_, task_token, task_lease, opaque_lease in issued:
        # Issuance asked about each credential: derive from the task token; renew the
        # opaque token.
        refused[task_lease] = _refused(
            lambda t=task_token: stack.issuance.exchange(
                ExchangeRequest(t, ACCESS_TOKEN_TYPE, audience="opaque")
            )
        )
        refused[opaque_lease] = _refused(
            lambda lease=opaque_lease: stack.issuance.renew(lease, None, "test")
        )

    while stack.leases.revoke_unjustified():
        pass
    revoked = {lease_id: _state(stack, lease_id) is LeaseState.REVOKED for lease_id in refused}
    assert revoked == refused
