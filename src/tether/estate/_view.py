"""A read-only, in-memory view of the applied estate for the request path.

Issuance must not read every identity per request: the view indexes identities by id
and by attestation issuer, profiles by id and audience, and is swapped whole when an
apply commits (or when another replica's apply is noticed), never mutated in place.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tether.model import (
    GOVERNANCE_ID,
    KIND_CONTROL_DEFAULTS,
    ControlProfile,
    Entitlement,
    GovernanceSettings,
    Identity,
    IdentityStatus,
    Issuer,
    Kind,
    Owner,
    Person,
    Policy,
    Profile,
    Vendor,
    Waiver,
    suspended_owners,
)
from tether.store import Store, Tx

VERSION_KEY = "estate/version"
#: The estate objects a file declares besides identities, and those Tether itself keeps
#: (a review's withdrawals of entitlements), which `apply` never removes.
DECLARED_TYPES = (
    "owner",
    "vendor",
    "issuer",
    "profile",
    "kind",
    "policy",
    "governance",
    "exception",
    "spiffe",
    "keys",
    "application",
    "person",
)
#: The one object of type "spiffe": the trust domain.
TRUST_DOMAIN_ID = "trust_domain"
#: The one object of type "keys": crypto_policy, escrow_holders and approver_groups.
KEY_SETTINGS_ID = "settings"
WITHDRAWAL_TYPE = "withdrawal"


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """An entitlement a review decided to revoke (`scopes` None) or narrow (to `scopes`):
    it holds over the file's grant until the file agrees, so re-applying a file that
    still grants it re-grants nothing."""

    identity_id: str
    profile_id: str
    scopes: tuple[str, ...] | None
    decided_by: str
    decided_at: str
    campaign: str
    item: str

    @property
    def key(self) -> str:
        return withdrawal_key(self.identity_id, self.profile_id)

    def applied_to(self, entitlement: Entitlement) -> Entitlement | None:
        if self.scopes is None:
            return None
        kept = self.scopes
        if entitlement.scopes is not None:
            kept = tuple(s for s in entitlement.scopes if s in self.scopes)
        return replace(entitlement, scopes=kept)

    def agrees_with(self, entitlement: Entitlement | None) -> bool:
        """Whether a grant as written is already no more than this withdrawal allows."""
        if entitlement is None:
            return True
        if self.scopes is None:
            return False
        return entitlement.scopes is not None and set(entitlement.scopes) <= set(self.scopes)

    def to_spec(self) -> dict[str, object]:
        return {
            "identity": self.identity_id,
            "profile": self.profile_id,
            "scopes": None if self.scopes is None else list(self.scopes),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "campaign": self.campaign,
            "item": self.item,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Withdrawal:
        scopes = spec.get("scopes")
        return cls(
            identity_id=str(spec["identity"]),
            profile_id=str(spec["profile"]),
            scopes=None if scopes is None else tuple(scopes),
            decided_by=str(spec["decided_by"]),
            decided_at=str(spec["decided_at"]),
            campaign=str(spec["campaign"]),
            item=str(spec["item"]),
        )


def withdrawal_key(identity_id: str, profile_id: str) -> str:
    return f"{identity_id}/{profile_id}"


def withdrawals(tx: Tx) -> dict[str, Withdrawal]:
    return {k: Withdrawal.from_spec(v) for k, v in tx.estate_objects(WITHDRAWAL_TYPE).items()}


def effective(identity: Identity, withdrawn: Mapping[str, Withdrawal]) -> Identity:
    """The identity with its review withdrawals applied to its entitlements."""
    if not withdrawn:
        return identity
    kept: list[Entitlement] = []
    changed = False
    for entitlement in identity.entitlements:
        withdrawal = withdrawn.get(withdrawal_key(identity.id, entitlement.profile_id))
        if withdrawal is None:
            kept.append(entitlement)
            continue
        changed = True
        narrowed = withdrawal.applied_to(entitlement)
        if narrowed is not None:
            kept.append(narrowed)
    return replace(identity, entitlements=tuple(kept)) if changed else identity


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
    #: Active identities that attest as local callers (a unix rule).
    attested_locally: tuple[Identity, ...] = ()
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)
    #: The SPIFFE trust domain of the estate's workloads (`trust_domain:`), if any.
    trust_domain: str | None = None
    #: Confidentiality keys' settings as written (tether.keys reads them).
    key_settings: Mapping[str, Any] = field(default_factory=dict)
    exceptions: Mapping[str, Waiver] = field(default_factory=dict)
    #: AuthZEN applications by id, as written (tether.authzen compiles them).
    applications: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Review decisions that withdrew or narrowed an entitlement, by withdrawal key
    #: (already applied to `identities`).
    withdrawals: Mapping[str, Withdrawal] = field(default_factory=dict)
    #: Departed owners whose identities are suspended (governance.orphaned: suspend),
    #: and since when: the justification rule's `departed`.
    suspended_owners: Mapping[str, dt.datetime] = field(default_factory=dict)
    #: The people agents may act for, by id and by (issuer, subject).
    people: Mapping[str, Person] = field(default_factory=dict)
    people_by_subject: Mapping[tuple[str, str], Person] = field(default_factory=dict)

    def control(self, kind: Kind) -> ControlProfile:
        return self.controls.get(kind) or KIND_CONTROL_DEFAULTS[kind]


def load_view(store: Store) -> EstateView:
    with store.read() as tx:
        raw_version = tx.get_meta(VERSION_KEY)
        objects = {t: tx.estate_objects(t) for t in DECLARED_TYPES}
        withdrawn = withdrawals(tx)
        identities = {
            i: effective(Identity.from_spec(s), withdrawn) for i, s in tx.identity_specs().items()
        }
    attested: dict[str, list[Identity]] = {}
    for identity in identities.values():
        issuer = identity.attest_issuer
        if issuer is not None and identity.status is IdentityStatus.ACTIVE:
            attested.setdefault(issuer, []).append(identity)
    local = tuple(
        i for i in identities.values() if i.unix_rule and i.status is IdentityStatus.ACTIVE
    )
    owners = {k: Owner.from_spec(v) for k, v in objects["owner"].items()}
    governance = GovernanceSettings.from_spec(objects["governance"].get(GOVERNANCE_ID, {}))
    people = {k: Person.from_spec(v) for k, v in objects["person"].items()}
    return EstateView(
        version=int(raw_version or b"0"),
        identities=identities,
        owners=owners,
        vendors={k: Vendor.from_spec(v) for k, v in objects["vendor"].items()},
        issuers={k: Issuer.from_spec(v) for k, v in objects["issuer"].items()},
        profiles={k: Profile.from_spec(v) for k, v in objects["profile"].items()},
        controls={
            kind: KIND_CONTROL_DEFAULTS[kind].with_overrides(objects["kind"].get(kind.value, {}))
            for kind in Kind
        },
        policies=tuple(Policy.from_spec(v) for _, v in sorted(objects["policy"].items())),
        attested_by_issuer={k: tuple(v) for k, v in attested.items()},
        attested_locally=local,
        governance=governance,
        trust_domain=objects["spiffe"].get(TRUST_DOMAIN_ID, {}).get("name"),
        key_settings=objects["keys"].get(KEY_SETTINGS_ID, {}),
        exceptions={k: Waiver.from_spec(v) for k, v in objects["exception"].items()},
        applications=objects["application"],
        withdrawals=withdrawn,
        suspended_owners=suspended_owners(governance, owners.values()),
        people=people,
        people_by_subject={(p.issuer, p.subject): p for p in people.values()},
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
