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
from tether.model._document import Estate
from tether.model._estate import (
    DEFAULT_ENVIRONMENTS,
    KIND_CONTROL_DEFAULTS,
    X509_ISSUER,
    Approval,
    ControlProfile,
    Criticality,
    Entitlement,
    Identity,
    IdentityStatus,
    Issuer,
    Kind,
    Owner,
    OwnerStatus,
    Policy,
    Profile,
    Vendor,
)
from tether.model._governance import (
    GOVERNANCE_ID,
    THRESHOLD_NAMES,
    GovernanceSettings,
    OrphanAction,
    Thresholds,
    Waiver,
    suspended_owners,
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
from tether.model._rules import DISCOVERY_RULES, RULES, Rule, Severity
from tether.model._usage import Usage

__all__ = [
    "AUDIT_OPTIONAL_FIELDS",
    "AUDIT_RECORD_FIELDS",
    "DEFAULT_ENVIRONMENTS",
    "DISCOVERY_RULES",
    "GOVERNANCE_ID",
    "KIND_CONTROL_DEFAULTS",
    "RULES",
    "THRESHOLD_NAMES",
    "X509_ISSUER",
    "Approval",
    "AuditEvent",
    "AuditRecord",
    "ControlProfile",
    "Criticality",
    "Entitlement",
    "Estate",
    "ExpiryBound",
    "GovernanceSettings",
    "Identity",
    "IdentityStatus",
    "Issuer",
    "Kind",
    "Lease",
    "LeaseState",
    "OrphanAction",
    "Owner",
    "OwnerStatus",
    "Placement",
    "Policy",
    "Profile",
    "Rule",
    "Severity",
    "Task",
    "TaskStatus",
    "Thresholds",
    "Unjustified",
    "Usage",
    "Vendor",
    "Waiver",
    "bounded_expiry",
    "identity_problems",
    "justification_problems",
    "suspended_owners",
]
