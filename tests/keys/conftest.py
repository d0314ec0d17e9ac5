"""A key service on a real node (store, barrier, audit) of every backend, with the
estate's parts (identities, profiles, approver groups, escrow holders) given directly
as model objects, and the real Cedar engine deciding. Every key is generated here."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from tests.clock import SettableClock
from tether.app import Tether
from tether.config import Settings
from tether.keys import (
    Approver,
    ApproverGroup,
    CryptoPolicy,
    EscrowHolder,
    KeyAdmin,
    KeyParts,
    KeyService,
    KeySettings,
    KeyUser,
    cedar_decider,
)
from tether.model import Entitlement, Identity, Kind, Policy, Profile
from tether.policy import PolicyEngine

HOLDERS = ("h1", "h2", "h3", "h4", "h5")


def identity(identity_id: str, kind: Kind = Kind.WORKLOAD, **extra: Any) -> Identity:
    fields: dict[str, Any] = {
        "id": identity_id,
        "kind": kind,
        "owner_id": "team-orders",
        "purpose": "test",
        "justification": "TEST-1",
        "environment": "prod",
        "system": "orders",
    }
    fields.update(extra)
    return Identity(**fields)


def key_profile(profile_id: str, key: str, scopes: tuple[str, ...] = ()) -> Profile:
    return Profile(
        id=profile_id, provider="key", max_ttl=dt.timedelta(hours=1), target=key, scopes=scopes
    )


@dataclass
class World:
    node: Tether
    keys: KeyService
    clock: SettableClock
    identities: dict[str, Identity]
    profiles: dict[str, Profile]
    groups: dict[str, ApproverGroup]
    holders: dict[str, EscrowHolder]
    holder_keys: dict[str, bytes]
    crypto: list[CryptoPolicy]
    policies: list[Policy] = field(default_factory=list)
    admin: KeyAdmin = field(default_factory=lambda: KeyAdmin("alice"))
    user: KeyUser = field(
        default_factory=lambda: KeyUser("orders-api-run", "orders-api", attested=True)
    )

    def approver(self, name: str) -> Approver:
        return Approver(name)

    def entitle(
        self, identity_id: str, profile_id: str, scopes: tuple[str, ...] | None = None
    ) -> None:
        current = self.identities[identity_id]
        self.identities[identity_id] = Identity(
            **{
                **{f: getattr(current, f) for f in current.__dataclass_fields__},
                "entitlements": (*current.entitlements, Entitlement(profile_id, scopes)),
            }
        )

    def make_key(self, name: str, key_type: str, **options: Any) -> None:
        """A key owned by a fresh encryption_key identity, usable by `user` for every
        action its type takes."""
        owner = f"{name}-id"
        if owner not in self.identities:
            labels = options.pop("labels", {"data_classification": "confidential"})
            self.identities[owner] = identity(owner, Kind.ENCRYPTION_KEY, labels=labels)
        self.profiles[f"{name}-use"] = key_profile(f"{name}-use", name)
        self.entitle(self.user.identity_id, f"{name}-use")
        self.keys.create(self.admin, name, key_type, owner, options)

    def audit(self, prefix: str = "key.") -> list[Any]:
        with self.node.store.read() as tx:
            return tx.list_audit(0, 100_000, action_prefix=prefix)


def _holder_keys() -> tuple[dict[str, EscrowHolder], dict[str, bytes]]:
    holders, private = {}, {}
    for index, name in enumerate(HOLDERS):
        if index == 4:  # one RSA holder among X25519 ones
            rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = rsa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            holders[name] = EscrowHolder(name, public.decode())
            private[name] = rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            continue
        x_key = x25519.X25519PrivateKey.generate()
        raw = x_key.public_key().public_bytes_raw()
        holders[name] = EscrowHolder(name, "x25519:" + base64.b64encode(raw).decode())
        private[name] = x_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return holders, private


_HOLDERS_CACHE: list[tuple[dict[str, EscrowHolder], dict[str, bytes]]] = []


def holder_keys() -> tuple[dict[str, EscrowHolder], dict[str, bytes]]:
    # Generated once per test process (an RSA key takes a while), never stored.
    if not _HOLDERS_CACHE:
        _HOLDERS_CACHE.append(_holder_keys())
    return _HOLDERS_CACHE[0]


def build_world(node: Tether, settings: KeySettings | None = None) -> World:
    clock = SettableClock()
    identities = {"orders-api": identity("orders-api")}
    profiles: dict[str, Profile] = {}
    groups = {
        "key-approvers": ApproverGroup(
            "key-approvers", ("bob", "carol", "dave"), 2, dt.timedelta(hours=1)
        )
    }
    holders, private = holder_keys()
    crypto = [CryptoPolicy()]
    policies: list[Policy] = []
    engines: dict[tuple[str, ...], PolicyEngine] = {}

    def engine() -> PolicyEngine:
        marker = tuple(p.source for p in policies)
        if marker not in engines:
            engines[marker] = PolicyEngine.compile(policies)
        return engines[marker]

    world_ref: list[World] = []

    def identity_of(identity_id: str) -> Identity | None:
        return world_ref[0].identities.get(identity_id)

    decide = cedar_decider(engine, identity_of, lambda: world_ref[0].profiles)
    service = KeyService(
        KeyParts(
            store=node.store,
            barrier=node.barrier,
            audit=node.audit,
            identity_of=identity_of,
            decide=decide,
            crypto_policy=lambda: crypto[0],
            approver_groups=lambda: groups,
            escrow_holders=lambda: holders,
            clock=clock,
            settings=settings or KeySettings(usage_block=64),
        )
    )
    world = World(
        node, service, clock, identities, profiles, groups, holders, private, crypto, policies
    )
    world_ref.append(world)
    return world


@pytest.fixture
def world(node: Tether) -> World:
    """On every backend."""
    return build_world(node)


@pytest.fixture
def mem_node(tmp_path: Path) -> Iterator[Tether]:
    n = Tether(Settings(home=tmp_path, database_url="memory://"))
    n.initialize(shares=1, threshold=1)
    yield n
    n.stop()


@pytest.fixture
def mem_world(mem_node: Tether) -> World:
    """On the in-memory store only (behaviour that does not depend on the backend)."""
    return build_world(mem_node)


def as_mapping(value: Any) -> Mapping[str, Any]:
    assert isinstance(value, Mapping)
    return value
