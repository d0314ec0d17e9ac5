"""Governance: usage evidence, findings, risk, access reviews, exceptions, reports, alerts.

The engine evaluates every identity against the rules of `tether.model.RULES` from the
estate view, the usage rollups, the live leases and static secrets, and keeps one finding
per (rule, identity, subject) with its state: open, excepted or resolved. Findings raised
elsewhere (the key service's, on keys' encryption_key identities and on principals) come
in as drafts through the same merge.
"""

from tether.govern._engine import (
    FINDING,
    DraftLike,
    FindingsEngine,
    Outcome,
    PageDrafts,
    finding_id,
)
from tether.govern._outbox import AlertOutbox, FindingGauges
from tether.govern._report import FRAMEWORKS, TRIGGERS
from tether.govern._reviews import (
    EntitlementEvidence,
    Reviewer,
    ReviewScope,
    apply_withdrawals,
    entitlement_evidence,
)
from tether.govern._service import FindingFilter, Governance, GovernParts, parse_since
from tether.govern._sinks import InvalidSink, Sinks, sink_key_from
from tether.govern._usage import USAGE_FIELDS, UsageRecorder
from tether.govern.errors import (
    AlreadyDecided,
    GovernError,
    InvalidException,
    InvalidReview,
    InvalidUsage,
    NotReviewer,
    SinkError,
    UnknownGovernObject,
)

__all__ = [
    "FINDING",
    "FRAMEWORKS",
    "TRIGGERS",
    "USAGE_FIELDS",
    "AlertOutbox",
    "AlreadyDecided",
    "DraftLike",
    "EntitlementEvidence",
    "FindingFilter",
    "FindingGauges",
    "FindingsEngine",
    "GovernError",
    "GovernParts",
    "Governance",
    "InvalidException",
    "InvalidReview",
    "InvalidSink",
    "InvalidUsage",
    "NotReviewer",
    "Outcome",
    "PageDrafts",
    "ReviewScope",
    "Reviewer",
    "SinkError",
    "Sinks",
    "UnknownGovernObject",
    "UsageRecorder",
    "apply_withdrawals",
    "entitlement_evidence",
    "finding_id",
    "parse_since",
    "sink_key_from",
]
