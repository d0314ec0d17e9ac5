"""The registry of target kinds: what it lists, and that a new kind is one registration.

A made-up kind (`fakedb`) registered the way a plug-in would be is then accepted by
every part of Tether that reads kinds: target registration (its DSN scheme), the
provider it hands out, estate validation (its profiles, its own grants rules) and
renewal, without any other change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document
from tether.app import Tether
from tether.config import Settings
from tether.estate import EstateInvalid, parse_estate
from tether.model import Identity, Lease, Profile
from tether.providers import IssuedCredential
from tether.static import StaticCredential, VaultOnly
from tether.targets import (
    TARGET_KINDS,
    InvalidGrants,
    InvalidTarget,
    Target,
    TargetKind,
    kind_names,
    register,
    renewable_kinds,
    static_kinds,
    target_kind,
)
from tether.targets import _kinds as registry
from tether.targets.postgres._static import PostgresStaticBackend


class FakeDb:
    """An ExternalProvider that keeps its "users" in a set."""

    name = "fakedb"
    external = True

    def __init__(self, target: Target) -> None:
        self.target = target
        self.users: set[str] = set()

    def object_name(self, lease: Lease) -> str:
        return f"tether_{lease.id}"

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        self.users.add(self.object_name(lease))
        return IssuedCredential(secret="s3cret-of-the-fake")

    def renew(self, lease: Lease) -> None:
        return None

    def revoke(self, lease: Lease) -> None:
        self.users.discard(self.object_name(lease))

    def reconcile(self, live_lease_ids: Callable[[Sequence[str]], set[str]]) -> list[str]:
        return []

    def rotate_root(self) -> Target:
        return self.target

    def health(self) -> Mapping[str, Any]:
        return {"ok": True}


def _fake_grants(grants: Any) -> object:
    if grants != {"level": "read"}:
        raise InvalidGrants("grants.level: only 'read' is offered")
    return grants


FAKE = TargetKind(
    name="fakedb",
    dsn_schemes=("fakedb://",),
    provider=FakeDb,
    parse_grants=_fake_grants,
    renewable=False,
)


@pytest.fixture
def fake_kind(monkeypatch: pytest.MonkeyPatch) -> TargetKind:
    # monkeypatch takes the registration back out after the test.
    monkeypatch.setitem(registry._kinds, FAKE.name, FAKE)
    return FAKE


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Tether]:
    n = Tether(Settings(home=tmp_path, database_url="memory://"))
    n.initialize(shares=1, threshold=1)
    yield n
    n.stop()


def test_the_built_in_kinds() -> None:
    assert kind_names() == ("postgres", "redis")
    assert renewable_kinds() == ("postgres", "redis")
    assert static_kinds() == ("postgres-static",)
    assert target_kind("postgres").accepts_dsn("postgresql://admin@db/app")
    assert not target_kind("redis").accepts_dsn("postgresql://admin@db/app")
    with pytest.raises(InvalidTarget, match="kind: must be one of postgres, redis"):
        target_kind("mysql")


def test_a_kind_is_not_replaced_by_accident() -> None:
    with pytest.raises(InvalidTarget, match="'postgres' is registered already"):
        register(replace(FAKE, name="postgres"))
    with pytest.raises(InvalidTarget, match="served by another kind"):
        register(replace(FAKE, static_kind="postgres-static"))
    assert "fakedb" not in TARGET_KINDS


def test_a_registered_kind_is_accepted_everywhere_kinds_are_read(
    fake_kind: TargetKind, node: Tether
) -> None:
    assert "fakedb" in kind_names() and "fakedb" not in renewable_kinds()
    with pytest.raises(InvalidTarget, match="dsn: expected a fakedb:// URL"):
        node.targets.add("ledger", "fakedb", "postgresql://admin@db/app", "test")
    node.targets.add("ledger", "fakedb", "fakedb://admin:pw@ledger", "test")
    assert node.targets.kinds() == {"ledger": "fakedb"}
    assert isinstance(node.targets.provider("ledger"), FakeDb)

    doc = estate_document(2)
    profile = {"id": "ledger-ro", "provider": "fakedb", "max_ttl": "1h"}
    doc["profiles"].append({**profile, "target": "ledger", "grants": {"level": "read"}})
    assert "ledger-ro" in {p.id for p in parse_estate(doc).profiles}

    doc["profiles"][-1] = {**profile, "grants": {"level": "admin"}}
    with pytest.raises(EstateInvalid) as refused:
        parse_estate(doc)
    index = len(doc["profiles"]) - 1
    assert [str(p) for p in refused.value.problems] == [
        f"profiles[{index}].target: is required for provider fakedb",
        f"profiles[{index}].grants.level: only 'read' is offered",
    ]


def _credential(kind: str, target: str | None) -> StaticCredential:
    return StaticCredential(
        id="billing-db",
        kind=kind,
        owner_id="team-a",
        readers=("svc",),
        overlap=dt.timedelta(hours=1),
        rotate_every=None,
        last_rotated_at=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
        target=target,
        users=("billing_a", "billing_b"),
    )


def test_the_static_backend_comes_from_the_kind_that_serves_it(node: Tether) -> None:
    assert isinstance(node.targets.static_backend(_credential("static", None)), VaultOnly)
    # Nothing connects until the backend is used: an unreachable target is fine here.
    node.targets.add("billing", "postgres", "postgresql://admin:pw@127.0.0.1:9/app", "test")
    backend = node.targets.static_backend(_credential("postgres-static", "billing"))
    assert isinstance(backend, PostgresStaticBackend)
    assert backend.users == ("billing_a", "billing_b") and backend.target.name == "billing"
    with pytest.raises(InvalidTarget, match="no target kind serves 'mysql-static'"):
        node.targets.static_backend(_credential("mysql-static", "billing"))
