"""Whether an identity still justifies a credential: the one rule issuance, renewal and
the lifecycle sweep all apply (invariants 3 and 7). Pure: no I/O, no clock of its own.

A credential is justified while its identity is active and unexpired, its approval and
its vendor's contract run, its owner exists, and the identity still has the owner,
vendor, environment and region the credential was issued for (its `Placement`). An
identity moved to another region keeps no secret that still works.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from tether._internal.timeutil import format_time
from tether.model._estate import Identity, IdentityStatus, Vendor


@dataclass(frozen=True, slots=True)
class Placement:
    """What a credential was justified for besides time: its identity's owner, vendor,
    environment and region when it was issued. Leases record it."""

    owner_id: str
    environment: str
    region: str | None = None
    vendor_id: str | None = None

    @classmethod
    def of(cls, identity: Identity) -> Placement:
        return cls(identity.owner_id, identity.environment, identity.region, identity.vendor_id)

    @classmethod
    def of_spec(cls, spec: Mapping[str, Any]) -> Placement:
        """The same, from an identity's stored spec (the store indexes it on write)."""
        return cls(spec["owner"], spec["environment"], spec.get("region"), spec.get("vendor"))

    @property
    def key(self) -> str:
        """One comparable text: equal keys, equal placements (the store compares keys)."""
        fields = [self.owner_id, self.environment, self.region, self.vendor_id]
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> Placement:
        owner_id, environment, region, vendor_id = json.loads(key)
        return cls(owner_id, environment, region, vendor_id)

    def describe(self) -> str:
        return f"{self.environment}/{self.region or '-'}"


@dataclass(frozen=True, slots=True)
class Unjustified:
    """One ended justification: a stable code (`guardrail:<code>` in decisions) and a
    sentence fit for an error description and the audit entry."""

    code: str
    reason: str


def identity_problems(
    identity: Identity, now: dt.datetime, vendor: Vendor | None
) -> list[Unjustified]:
    """The conditions of the identity itself and of its vendor's contract, in a fixed
    order. `vendor` is the identity's vendor as known (None: unknown, fail closed)."""
    out: list[Unjustified] = []
    if identity.status is not IdentityStatus.ACTIVE:
        out.append(
            Unjustified("identity-inactive", f"identity {identity.id} is {identity.status.value}")
        )
    if identity.expires_at is not None and identity.expires_at <= now:
        out.append(
            Unjustified(
                "identity-expired",
                f"identity {identity.id} expired at {format_time(identity.expires_at)}",
            )
        )
    approval = identity.approval
    if approval is not None and approval.expires_at <= now:
        out.append(
            Unjustified(
                "approval-expired",
                f"approval by {approval.by} expired at {format_time(approval.expires_at)}",
            )
        )
    if identity.vendor_id is not None:
        if vendor is None or vendor.id != identity.vendor_id:
            # Fail closed: a vendor we cannot see is a contract we cannot check.
            out.append(
                Unjustified(
                    "vendor-unknown",
                    f"vendor {identity.vendor_id} of identity {identity.id} is not known",
                )
            )
        elif vendor.contract_ends <= now:
            out.append(
                Unjustified(
                    "vendor-contract-ended",
                    f"the contract with vendor {vendor.id} ended at "
                    f"{format_time(vendor.contract_ends)}",
                )
            )
    return out


def _moved(identity: Identity, was: Placement) -> list[Unjustified]:
    now = Placement.of(identity)
    out: list[Unjustified] = []
    if now.owner_id != was.owner_id:
        out.append(
            Unjustified(
                "owner-changed",
                f"identity {identity.id} moved from owner {was.owner_id} to {now.owner_id}",
            )
        )
    if now.vendor_id != was.vendor_id:
        out.append(
            Unjustified(
                "vendor-changed",
                f"identity {identity.id} moved from vendor {was.vendor_id or '(none)'} "
                f"to {now.vendor_id or '(none)'}",
            )
        )
    if (now.environment, now.region) != (was.environment, was.region):
        out.append(
            Unjustified(
                "placement-changed",
                f"identity {identity.id} moved from {was.describe()} to {now.describe()}",
            )
        )
    return out


def justification_problems(
    identity: Identity,
    now: dt.datetime,
    *,
    owners: Container[str],
    vendors: Mapping[str, Vendor],
    justified_for: Placement | None = None,
    departed: Mapping[str, dt.datetime] | None = None,
) -> list[Unjustified]:
    """Every reason the identity no longer justifies a credential (empty: it does).

    `departed` maps each departed owner whose identities are suspended to when that
    began (GovernanceSettings.suspends_at). `justified_for` is the placement an existing
    credential was issued for (a lease
    being renewed, or the credential a request is derived from); None for a request
    that stands on fresh evidence only.
    """
    out = identity_problems(identity, now, vendors.get(identity.vendor_id or ""))
    if identity.owner_id not in owners:
        out.append(Unjustified("owner-removed", f"owner {identity.owner_id} was removed"))
    suspends_at = (departed or {}).get(identity.owner_id)
    if suspends_at is not None and suspends_at <= now:
        out.append(
            Unjustified(
                "owner-departed",
                f"owner {identity.owner_id} departed; identity {identity.id} is orphaned "
                f"(governance.orphaned: suspend, since {format_time(suspends_at)})",
            )
        )
    if justified_for is not None:
        out += _moved(identity, justified_for)
    return out
