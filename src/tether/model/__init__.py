"""Tether's vocabulary (design.md §1) as frozen, slotted dataclasses. No I/O here.

Every estate object converts to a *spec*: a plain JSON-able dict in canonical form
(durations as `15m`, times as RFC 3339 UTC). Specs are what the store keeps and what a
plan compares, so applying the same file twice is a no-op by construction.
"""

from tether.model._audit import (
    AUDIT_OPTIONAL_FIELDS,
    AUDIT_RECORD_FIELDS,
    AuditEvent,
    AuditRecord,
)
from tether.model._estate import (
    DEFAULT_ENVIRONMENTS,
    KIND_CONTROL_DEFAULTS,
    Approval,
    ControlProfile,
    Criticality,
    Entitlement,
    Estate,
    Identity,
    IdentityStatus,
    Issuer,
    Kind,
    Owner,
    Policy,
    Profile,
    Vendor,
)
from tether.model._justification import (
    Placement,
    Unjustified,
    identity_problems,
    justification_problems,
)
from tether.model._lease import (
    ExpiryBound,
    Lease,
    LeaseState,
    Task,
    TaskStatus,
    bounded_expiry,
)

__all__ = [
    "AUDIT_OPTIONAL_FIELDS",
    "AUDIT_RECORD_FIELDS",
    "DEFAULT_ENVIRONMENTS",
    "KIND_CONTROL_DEFAULTS",
    "Approval",
    "AuditEvent",
    "AuditRecord",
    "ControlProfile",
    "Criticality",
    "Entitlement",
    "Estate",
    "ExpiryBound",
    "Identity",
    "IdentityStatus",
    "Issuer",
    "Kind",
    "Lease",
    "LeaseState",
    "Owner",
    "Placement",
    "Policy",
    "Profile",
    "Task",
    "TaskStatus",
    "Unjustified",
    "Vendor",
    "bounded_expiry",
    "identity_problems",
    "justification_problems",
]
