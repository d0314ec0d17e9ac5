"""Finding candidates about keys, shaped for tether.govern's catalog.

Each `KeyFinding` maps 1:1 onto a govern finding: `rule` is the rule id (KEY_RULES
gives its title, severity and OWASP NHI / NIST CSF 2.0 mapping, for the catalog in
tether.model's RULES), `subject` tells apart findings of one rule on one identity
(govern's Draft.subject), `identity_id` is the key's owning `encryption_key` identity
(None for a principal's role conflict), `evidence` and `recommendation` as in Draft.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether._internal.timeutil import format_duration, format_time
from tether.keys._model import Key
from tether.keys._policy import CryptoPolicy, classification_of
from tether.model import Identity
from tether.store import KeyUsageCount

ADMIN_ROLE = "key-admin"
USER_ROLE = "key-user"


@dataclass(frozen=True, slots=True)
class KeyRule:
    id: str
    title: str
    severity: str
    owasp_nhi: tuple[str, ...]
    nist_csf: tuple[str, ...]


def _rule(id_: str, title: str, severity: str, owasp: str, nist: str) -> KeyRule:
    return KeyRule(id_, title, severity, tuple(owasp.split()), tuple(nist.split()))


#: The rules key findings are raised under (for tether.model's RULES).
KEY_RULES: Mapping[str, KeyRule] = {
    r.id: r
    for r in (
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


@dataclass(frozen=True, slots=True)
class KeyFinding:
    rule: str
    key: str
    identity_id: str | None
    severity: str
    subject: str
    evidence: Mapping[str, Any]
    recommendation: str


def _finding(
    rule: str,
    key: str,
    identity_id: str | None,
    subject: str,
    evidence: Mapping[str, Any],
    fix: str,
) -> KeyFinding:
    return KeyFinding(rule, key, identity_id, KEY_RULES[rule].severity, subject, evidence, fix)


def key_findings(
    key: Key,
    identity: Identity | None,
    policy: CryptoPolicy,
    usage: Sequence[KeyUsageCount],
    users: Mapping[str, str],
    user_identity: Mapping[str, Identity | None],
    now: dt.datetime,
) -> list[KeyFinding]:
    """Every finding on one key. `usage`: its stored counters; `users`: identity id ->
    last use (ISO time) of every identity seen using it; `user_identity`: those
    identities as the estate has them (None: not in the estate)."""
    out: list[KeyFinding] = []
    name, owner_identity = key.name, key.identity_id
    classification = classification_of(identity)
    counts = {u.version: u for u in usage}
    subject = f"key:{name}"

    if classification in policy.escrow_required and key.escrow is None:
        out.append(
            _finding(
                "key-escrow-missing",
                name,
                owner_identity,
                subject,
                {
                    "key": name,
                    "classification": classification,
                    "escrow_required": sorted(policy.escrow_required),
                },
                f"configure escrow for {name} (needs approvals: change-crypto-policy)",
            )
        )

    latest = counts.get(key.latest_version)
    encryptions = latest.encryptions if latest is not None else 0
    due = policy.due_rotation(key, now, classification=classification, encryptions=encryptions)
    if due and key.deletion is None:
        age = policy.max_age_for(key, classification)
        out.append(
            _finding(
                "key-rekey-overdue",
                name,
                owner_identity,
                subject,
                {
                    "key": name,
                    "reasons": list(due),
                    "latest_version": key.latest_version,
                    "latest_created_at": format_time(key.latest.created_at),
                    "max_age": None if age is None else format_duration(age),
                    "encryptions": encryptions,
                    "usage_limit": policy.limit_for(key),
                },
                f"rotate {name} (tether key rotate {name}); the rotation job does it when it runs",
            )
        )

    retired = [
        v
        for v in key.versions
        if v.retired_for is not None and v.number >= key.min_decryption_version
    ]
    if retired:
        versions = []
        for version in retired:
            count = counts.get(version.number)
            since = None
            if count is not None and version.decryptions_at_rotation is not None:
                since = count.decryptions - version.decryptions_at_rotation
            versions.append(
                {
                    "version": version.number,
                    "retired_for": version.retired_for,
                    "decryptions_since_rotation": since,
                    "last_decrypted_at": None
                    if count is None or count.last_decrypted_at is None
                    else format_time(count.last_decrypted_at),
                }
            )
        target = max(v.number for v in retired) + 1
        out.append(
            _finding(
                "key-old-version-decryptable",
                name,
                owner_identity,
                subject,
                {
                    "key": name,
                    "min_decryption_version": key.min_decryption_version,
                    "versions": versions,
                },
                f"rewrap old ciphertext of {name} (POST /v1/keys/{name}/rewrap), then raise "
                f"min_decryption_version to {target}",
            )
        )

    if key.type in policy.deprecated:
        out.append(
            _finding(
                "key-deprecated-algorithm",
                name,
                owner_identity,
                subject,
                {
                    "key": name,
                    "type": key.type.value,
                    "deprecated": sorted(t.value for t in policy.deprecated),
                },
                f"create a key of a current type, move {name}'s data to it, and delete {name}",
            )
        )

    foreign = []
    for user_id, last in sorted(users.items()):
        user = user_identity.get(user_id)
        if _outside(identity, user):
            foreign.append(
                {
                    "identity": user_id,
                    "system": None if user is None else user.system,
                    "owner": None if user is None else user.owner_id,
                    "last_used": last,
                }
            )
    if foreign:
        out.append(
            _finding(
                "key-foreign-use",
                name,
                owner_identity,
                subject,
                {
                    "key": name,
                    "key_system": None if identity is None else identity.system,
                    "key_owner": None if identity is None else identity.owner_id,
                    "users": foreign[:32],
                },
                f"give each system its own key, or withdraw the entitlement to {name}",
            )
        )
    return out


def _outside(key_identity: Identity | None, user: Identity | None) -> bool:
    """Whether `user` is outside the key owner's systems: another system when the key's
    identity names one, else another owner. Unknown identities are outside."""
    if user is None or key_identity is None:
        return True
    if key_identity.system is not None:
        return user.system != key_identity.system
    return user.owner_id != key_identity.owner_id


def role_conflicts(assignments: Mapping[str, Iterable[str]]) -> list[KeyFinding]:
    """A finding per principal holding both the key-admin and the key-user role
    (`assignments`: principal name -> roles, e.g. from the API tokens)."""
    out = []
    for principal, roles in sorted(assignments.items()):
        held = set(roles)
        if ADMIN_ROLE in held and USER_ROLE in held:
            out.append(
                _finding(
                    "key-role-conflict",
                    "",
                    None,
                    f"principal:{principal}",
                    {"principal": principal, "roles": sorted(held & {ADMIN_ROLE, USER_ROLE})},
                    f"give {principal} one of {ADMIN_ROLE} and {USER_ROLE}, not both",
                )
            )
    return out
