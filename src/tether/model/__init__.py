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
    DEFAULT_DELEGATION_DEPTH,
    DEFAULT_ENVIRONMENTS,
    KIND_CONTROL_DEFAULTS,
    X509_ISSUER,
    Approval,
    ControlProfile,
    Criticality,
    Entitlement,
    Identity,
    IdentityStatus,
    IntentSchema,
    Issuer,
    Kind,
    Owner,
    OwnerStatus,
    Person,
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
    AgentRun,
    ExpiryBound,
    Lease,
    LeaseState,
    Task,
    TaskStatus,
    bounded_expiry,
)
from tether.model._rules import (
    DISCOVERY_RULES,
    KEY_SERVICE_RULES,
    OWASP_NHI,
    RULES,
    SEVERITIES,
    UNOWNED_KEY_RULES,
    Rule,
    Severity,
)
from tether.model._usage import Usage

__all__ = [
    "AUDIT_OPTIONAL_FIELDS",
    "AUDIT_RECORD_FIELDS",
    "DEFAULT_DELEGATION_DEPTH",
    "DEFAULT_ENVIRONMENTS",
    "DISCOVERY_RULES",
    "GOVERNANCE_ID",
    "KEY_SERVICE_RULES",
    "KIND_CONTROL_DEFAULTS",
    "OWASP_NHI",
    "RULES",
    "SEVERITIES",
    "THRESHOLD_NAMES",
    "UNOWNED_KEY_RULES",
    "X509_ISSUER",
    "AgentRun",
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
    "IntentSchema",
    "Issuer",
    "Kind",
    "Lease",
    "LeaseState",
    "OrphanAction",
    "Owner",
    "OwnerStatus",
    "Person",
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
