"""A read-only, in-memory view of the applied estate for the request path.

Issuance must not read every identity per request: the view indexes identities by id
and by attestation issuer, profiles by id and audience, and is swapped whole when an
apply commits (or when another replica's apply is noticed), never mutated in place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tether.model import (
    KIND_CONTROL_DEFAULTS,
    ControlProfile,
    Identity,
    IdentityStatus,
    Issuer,
    Kind,
    Owner,
    Policy,
    Profile,
    Vendor,
)
from tether.store import Store

VERSION_KEY = "estate/version"


@dataclass(frozen=True, slots=True)
class EstateView:
    version: int = 0
    identities: Mapping[str, Identity] = field(default_factory=dict)
    owners: Mapping[str, Owner] = field(default_factory=dict)
    vendors: Mapping[str, Vendor] = field(default_factory=dict)
    issuers: Mapping[str, Issuer] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    controls: Mapping[Kind, ControlProfile] = field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    #: Active identities with an attestation rule, by issuer id.
    attested_by_issuer: Mapping[str, tuple[Identity, ...]] = field(default_factory=dict)

    def control(self, kind: Kind) -> ControlProfile:
        return self.controls.get(kind) or KIND_CONTROL_DEFAULTS[kind]


def load_view(store: Store) -> EstateView:
    with store.read() as tx:
        raw_version = tx.get_meta(VERSION_KEY)
        objects = {
            t: tx.estate_objects(t)
            for t in ("owner", "vendor", "issuer", "profile", "kind", "policy")
        }
        identities = {i: Identity.from_spec(s) for i, s in tx.identity_specs().items()}
    attested: dict[str, list[Identity]] = {}
    for identity in identities.values():
        if identity.attest is not None and identity.status is IdentityStatus.ACTIVE:
            attested.setdefault(identity.attest["issuer"], []).append(identity)
    return EstateView(
        version=int(raw_version or b"0"),
        identities=identities,
        owners={k: Owner.from_spec(v) for k, v in objects["owner"].items()},
        vendors={k: Vendor.from_spec(v) for k, v in objects["vendor"].items()},
        issuers={k: Issuer.from_spec(v) for k, v in objects["issuer"].items()},
        profiles={k: Profile.from_spec(v) for k, v in objects["profile"].items()},
        controls={
            kind: KIND_CONTROL_DEFAULTS[kind].with_overrides(objects["kind"].get(kind.value, {}))
            for kind in Kind
        },
        policies=tuple(Policy.from_spec(v) for _, v in sorted(objects["policy"].items())),
        attested_by_issuer={k: tuple(v) for k, v in attested.items()},
    )


class EstateViewHolder:
    """Holds the current view; `refresh` reloads only if the stored version moved."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._view = load_view(store)
        self.listeners: list[Callable[[EstateView], None]] = []

    @property
    def current(self) -> EstateView:
        return self._view

    def reload(self) -> EstateView:
        view = load_view(self._store)
        with self._lock:
            self._view = view
        for listener in self.listeners:
            listener(view)
        return view

    def refresh_if_changed(self) -> None:
        with self._store.read() as tx:
            raw = tx.get_meta(VERSION_KEY)
        if int(raw or b"0") != self._view.version:
            self.reload()
