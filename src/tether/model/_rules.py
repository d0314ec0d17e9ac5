"""The findings rules Tether evaluates: ids, severities and framework mappings. No I/O.

OWASP Top 10 Non-Human Identities Risks (2025):
NHI1 improper offboarding, NHI2 secret leakage, NHI3 vulnerable third-party NHI,
NHI4 insecure authentication, NHI5 overprivileged NHI, NHI6 insecure cloud deployment
configurations, NHI7 long-lived secrets, NHI8 environment isolation, NHI9 NHI reuse,
NHI10 human use of NHI.
NIST CSF 2.0 subcategories: GV.RR-02 (roles and responsibilities), GV.SC-10 (supplier
relationship end), ID.AM-08 (assets managed through their life cycle), PR.AA-01
(identities and credentials managed), PR.AA-03 (authenticated), PR.AA-05 (access
permissions, least privilege, reviewed), PR.DS-01 (data at rest), PR.DS-10 (data in
use), PR.DS-11 (backups of data), PR.PS-01 (configuration management), PR.IR-01
(networks and environments protected), DE.CM-03 (personnel activity monitored),
DE.CM-09 (computing activity monitored), RS.MI-02 (incidents eradicated).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}
#: Severities most severe first, as reports and the dashboard list them.
SEVERITIES: tuple[str, ...] = tuple(s.value for s in sorted(Severity, key=_RANK.__getitem__)[::-1])
#: The OWASP Top 10 Non-Human Identities Risks (2025), by id, with their titles.
OWASP_NHI: Mapping[str, str] = {
    "NHI1": "Improper offboarding",
    "NHI2": "Secret leakage",
    "NHI3": "Vulnerable third-party NHI",
    "NHI4": "Insecure authentication",
    "NHI5": "Overprivileged NHI",
    "NHI6": "Insecure cloud deployment configurations",
    "NHI7": "Long-lived secrets",
    "NHI8": "Environment isolation",
    "NHI9": "NHI reuse",
    "NHI10": "Human use of NHI",
}


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    severity: Severity
    owasp_nhi: tuple[str, ...]
    nist_csf: tuple[str, ...]


def _rule(id_: str, title: str, severity: str, owasp: str, nist: str) -> Rule:
    return Rule(id_, title, Severity(severity), tuple(owasp.split()), tuple(nist.split()))


RULES: Mapping[str, Rule] = {
    r.id: r
    for r in (
        _rule("orphaned", "Owner departed or unknown", "high", "NHI1", "GV.RR-02 PR.AA-01"),
        _rule(
            "dormant", "No use within the dormancy window", "medium", "NHI1", "PR.AA-01 ID.AM-08"
        ),
        _rule(
            "retired-usable",
            "Retired identity whose credential still works",
            "critical",
            "NHI1",
            "PR.AA-01 ID.AM-08",
        ),
        _rule("approval-expired", "Approval expired", "high", "NHI1", "PR.AA-01 PR.AA-05"),
        _rule("approval-expiring", "Approval expiring soon", "low", "NHI1", "PR.AA-05"),
        _rule("vendor-ended", "Vendor contract ended", "high", "NHI3 NHI1", "GV.SC-10 PR.AA-01"),
        _rule("vendor-ending", "Vendor contract ending soon", "low", "NHI3", "GV.SC-10"),
        _rule(
            "over-privileged",
            "Entitlement or scopes granted but unused",
            "medium",
            "NHI5",
            "PR.AA-05",
        ),
        _rule("long-lived", "Credential older than its kind allows", "medium", "NHI7", "PR.AA-01"),
        _rule(
            "environment-crossing",
            "Reaches or is used from another environment",
            "high",
            "NHI8",
            "PR.IR-01 PR.AA-05",
        ),
        _rule(
            "reuse",
            "One credential or identity used by several workloads",
            "high",
            "NHI9",
            "PR.AA-01 DE.CM-09",
        ),
        _rule("human-use", "Used interactively by a person", "high", "NHI10", "PR.AA-01 DE.CM-03"),
        _rule(
            "insecure-authentication",
            "Authentication weaker than its kind requires",
            "high",
            "NHI4 NHI6",
            "PR.AA-03 PR.PS-01",
        ),
        _rule("leaked", "A secret was exposed", "critical", "NHI2", "PR.DS-01 RS.MI-02"),
        # Raised by discovery (tether.scan), not by evaluating an identity: no identity
        # owns the secret, which is the finding.
        _rule(
            "shadow-nhi",
            "Unmanaged secret of a known provider found",
            "high",
            "NHI2",
            "ID.AM-08 PR.DS-01",
        ),
        _rule(
            "revocation-stuck", "Revocation has not completed", "high", "NHI1", "PR.AA-01 DE.CM-09"
        ),
        _rule(
            "metadata-missing",
            "Purpose, justification or approval missing",
            "low",
            "NHI1",
            "ID.AM-08 GV.RR-02",
        ),
        _rule("review-overdue", "Access review overdue", "medium", "NHI5 NHI1", "PR.AA-05"),
        # AI agents (issue #14): what an agent may mean to do, and for whom it acts.
        _rule(
            "agent-intent-undeclared",
            "Agent without a declared intent schema",
            "medium",
            "NHI5",
            "PR.AA-05 ID.AM-08",
        ),
        _rule(
            "agent-outside-intent",
            "Agent runs reached for tools outside their declared intent",
            "high",
            "NHI5",
            "PR.AA-05 DE.CM-09",
        ),
        _rule(
            "delegation-chain-long",
            "Live credential carries a long delegation chain",
            "medium",
            "NHI5 NHI9",
            "PR.AA-05",
        ),
        _rule(
            "agent-principal-departed",
            "Departed person still lets the agent act for them",
            "high",
            "NHI1",
            "PR.AA-01 GV.RR-02",
        ),
        # Raised by the key service (tether.keys) about confidentiality keys: on the key's
        # owning encryption_key identity, or (key-role-conflict) on no identity.
        _rule(
            "key-escrow-missing",
            "Key not escrowed where its classification requires it",
            "high",
            "NHI7",
            "PR.DS-11 PR.DS-01",
        ),
        _rule(
            "key-rekey-overdue", "Key due for a new version", "high", "NHI7", "PR.DS-01 ID.AM-08"
        ),
        _rule(
            "key-old-version-decryptable",
            "Key version retired by crypto policy still decrypts",
            "medium",
            "NHI7",
            "PR.DS-01 PR.DS-10",
        ),
        _rule(
            "key-deprecated-algorithm",
            "Key of a deprecated algorithm",
            "high",
            "NHI7 NHI6",
            "PR.DS-01 PR.PS-01",
        ),
        _rule(
            "key-foreign-use",
            "Key used by an identity outside its owner's systems",
            "high",
            "NHI9 NHI8",
            "PR.AA-05 DE.CM-09",
        ),
        _rule(
            "key-role-conflict",
            "One principal both administers and uses keys",
            "high",
            "NHI5",
            "GV.RR-02 PR.AA-05",
        ),
    )
}

#: Rules raised by discovery (tether.scan) rather than by evaluating an identity.
DISCOVERY_RULES: frozenset[str] = frozenset({"shadow-nhi"})

#: Rules raised by the key service (tether.keys), not by govern's own rules: the
#: engine takes them as drafts from it (tether.govern's EngineParts.extra_drafts).
KEY_SERVICE_RULES: frozenset[str] = frozenset(r for r in RULES if r.startswith("key-"))

#: Of those, the ones no identity owns (a principal's): settled by the full evaluation.
UNOWNED_KEY_RULES: frozenset[str] = frozenset({"key-role-conflict"})
