from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether._internal.canonical import canonical_json
from tether.audit import AuditLog
from tether.cluster import ESTATE_APPLIED
from tether.errors import NotFoundError
from tether.estate._view import (
    DECLARED_TYPES,
    KEY_SETTINGS_ID,
    TRUST_DOMAIN_ID,
    VERSION_KEY,
    WITHDRAWAL_TYPE,
    Withdrawal,
    withdrawals,
)
from tether.model import (
    GOVERNANCE_ID,
    KIND_CONTROL_DEFAULTS,
    AuditEvent,
    ControlProfile,
    Estate,
    Identity,
    IdentityStatus,
    Kind,
)
from tether.store import IdentityFilter, Store, Tx

Spec = dict[str, Any]

#: Order in which object types are created (referenced things first).
_TYPES = DECLARED_TYPES


@dataclass(frozen=True, slots=True)
class Change:
    action: str  # create | update | retire | delete
    type: str
    id: str
    fields: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "type": self.type,
            "id": self.id,
            "fields": list(self.fields),
        }


@dataclass(frozen=True, slots=True)
class Held:
    """A grant the file still makes that a review withdrew: reported by every plan, and
    not re-granted, until the file agrees (`tether review export` writes that change)."""

    identity_id: str
    profile_id: str
    scopes: tuple[str, ...] | None
    campaign: str
    item: str

    def to_dict(self) -> dict[str, Any]:
        kept = "revoked" if self.scopes is None else "narrowed to " + ", ".join(self.scopes)
        return {
            "identity": self.identity_id,
            "profile": self.profile_id,
            "scopes": None if self.scopes is None else list(self.scopes),
            "campaign": self.campaign,
            "item": self.item,
            "message": (
                f"identities[{self.identity_id}] still grants {self.profile_id}, which review "
                f"{self.campaign} {kept}: the grant stays withdrawn until the file agrees"
            ),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]
    #: Review withdrawals the file still contradicts (not changes: nothing is re-granted).
    held: tuple[Held, ...] = ()
    #: For the writes: the specs to store, keyed like the changes.
    _specs: Mapping[tuple[str, str], Spec] = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "retire": 0, "delete": 0}
        for change in self.changes:
            out[change.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.counts(),
            "changes": [c.to_dict() for c in self.changes],
            "withdrawn": [h.to_dict() for h in self.held],
        }


def _desired(estate: Estate) -> dict[str, dict[str, Spec]]:
    return {
        "owner": {o.id: o.to_spec() for o in estate.owners},
        "vendor": {v.id: v.to_spec() for v in estate.vendors},
        "issuer": {i.id: i.to_spec() for i in estate.issuers},
        "profile": {p.id: p.to_spec() for p in estate.profiles},
        "kind": {k.value: dict(v) for k, v in estate.kind_overrides.items()},
        "policy": {p.id: p.to_spec() for p in estate.policies},
        # Stored only when written, so an estate without the section plans nothing new.
        "governance": {GOVERNANCE_ID: estate.governance.to_spec()} if estate.governance.raw else {},
        "exception": {e.id: e.to_spec() for e in estate.exceptions},
        "spiffe": ({TRUST_DOMAIN_ID: {"name": estate.trust_domain}} if estate.trust_domain else {}),
        "keys": ({KEY_SETTINGS_ID: dict(estate.key_settings)} if estate.key_settings else {}),
        "application": {str(a["id"]): dict(a) for a in estate.applications},
        "person": {p.id: p.to_spec() for p in estate.people},
    }


def _changed_fields(old: Spec, new: Spec) -> tuple[str, ...]:
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))


def compute_plan(tx: Tx, estate: Estate) -> Plan:
    changes: list[Change] = []
    specs: dict[tuple[str, str], Spec] = {}
    removals: list[Change] = []
    for type_, desired in _desired(estate).items():
        current = tx.estate_objects(type_)
        for object_id, spec in desired.items():
            old = current.get(object_id)
            if old is None:
                changes.append(Change("create", type_, object_id))
            elif old != spec:
                changes.append(Change("update", type_, object_id, _changed_fields(old, spec)))
            else:
                continue
            specs[(type_, object_id)] = spec
        removals.extend(Change("delete", type_, i) for i in sorted(current.keys() - desired.keys()))

    current_identities = tx.identity_specs()
    desired_ids = set()
    for identity in estate.identities:
        desired_ids.add(identity.id)
        spec = identity.to_spec()
        old = current_identities.get(identity.id)
        if old is None:
            changes.append(Change("create", "identity", identity.id))
        elif old != spec:
            changes.append(Change("update", "identity", identity.id, _changed_fields(old, spec)))
        else:
            continue
        specs[("identity", identity.id)] = spec
    for identity_id in sorted(current_identities.keys() - desired_ids):
        old = current_identities[identity_id]
        if old.get("status") != IdentityStatus.RETIRED.value:
            removals.append(Change("retire", "identity", identity_id, ("status",)))
            specs[("identity", identity_id)] = {**old, "status": IdentityStatus.RETIRED.value}
    held, settled = _withdrawals_against(tx, estate)
    removals += settled
    # Retire identities before deleting what they referred to.
    removals.sort(
        key=lambda c: (c.action != "retire", _TYPES.index(c.type) if c.type in _TYPES else -1)
    )
    return Plan(changes=tuple(changes + removals), held=tuple(held), _specs=specs)


def _withdrawals_against(tx: Tx, estate: Estate) -> tuple[list[Held], list[Change]]:
    """Which review withdrawals the file still contradicts, and which it now agrees with
    (those are settled: deleted by the apply)."""
    held: list[Held] = []
    settled: list[Change] = []
    grants = {
        (identity.id, e.profile_id): e
        for identity in estate.identities
        for e in identity.entitlements
    }
    for key, withdrawal in sorted(withdrawals(tx).items()):
        grant = grants.get((withdrawal.identity_id, withdrawal.profile_id))
        if withdrawal.agrees_with(grant):
            settled.append(Change("delete", WITHDRAWAL_TYPE, key))
        else:
            held.append(_held(withdrawal))
    return held, settled


def _held(withdrawal: Withdrawal) -> Held:
    return Held(
        withdrawal.identity_id,
        withdrawal.profile_id,
        withdrawal.scopes,
        withdrawal.campaign,
        withdrawal.item,
    )


class EstateService:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit
        #: Called after an apply that changed something has committed.
        self.on_applied: list[Callable[[Plan], None]] = []

    def plan(self, estate: Estate) -> Plan:
        with self._store.read() as tx:
            return compute_plan(tx, estate)

    def apply(self, estate: Estate, actor: str, document: Any = None) -> Plan:
        """Apply `estate` in one transaction, with one audit entry per change."""
        with self._store.transaction() as tx:
            plan = compute_plan(tx, estate)
            events: list[AuditEvent] = []
            for change in plan.changes:
                spec = plan._specs.get((change.type, change.id))
                if change.type == "identity":
                    assert spec is not None
                    tx.put_identity(spec)
                elif change.action == "delete":
                    tx.delete_estate_object(change.type, change.id)
                else:
                    assert spec is not None
                    tx.put_estate_object(change.type, change.id, spec)
                events.append(_change_event(change, spec, actor))
            digest = hashlib.sha256(canonical_json(document).encode()).hexdigest()
            events.append(
                AuditEvent(
                    action="estate.apply",
                    actor=actor,
                    result="ok",
                    reason="no change" if plan.empty else None,
                    details={"summary": plan.counts(), "document_sha256": digest},
                )
            )
            self._audit.append(tx, events)
            if not plan.empty:
                # Every node (this one too, idempotently) reloads its view from the event.
                version = int(tx.get_meta(VERSION_KEY) or b"0") + 1
                tx.put_meta(VERSION_KEY, str(version).encode())
                tx.publish(ESTATE_APPLIED, {"version": version})
                for listener in self.on_applied:
                    tx.on_commit(functools.partial(listener, plan))
            return plan

    # -- inventory --
    def control_profile(self, tx: Tx, kind: Kind) -> ControlProfile:
        overrides = tx.estate_objects("kind").get(kind.value, {})
        return KIND_CONTROL_DEFAULTS[kind].with_overrides(overrides)

    def list_identities(self, where: IdentityFilter) -> list[Identity]:
        with self._store.read() as tx:
            return [Identity.from_spec(s) for s in tx.list_identities(where)]

    def get_identity(self, identity_id: str, owner_scope: tuple[str, ...] | None) -> Spec:
        """An identity with its effective control profile, as an owner scope may see it."""
        with self._store.read() as tx:
            spec = tx.get_identity(identity_id)
            if spec is None or (owner_scope is not None and spec["owner"] not in owner_scope):
                raise NotFoundError(f"no identity {identity_id!r}")
            identity = Identity.from_spec(spec)
            control = self.control_profile(tx, identity.kind)
        return {**spec, "control_profile": control.to_spec()}


def _change_event(change: Change, spec: Spec | None, actor: str) -> AuditEvent:
    identity_fields: dict[str, Any] = {}
    if change.type == "identity" and spec is not None:
        identity_fields = {
            "identity_id": change.id,
            "owner_id": spec.get("owner"),
            "justification": spec.get("justification"),
        }
    elif change.type == "owner":
        identity_fields = {"owner_id": change.id}
    return AuditEvent(
        action=f"estate.{change.action}",
        actor=actor,
        details={"type": change.type, "id": change.id, "fields": list(change.fields)},
        **identity_fields,
    )
