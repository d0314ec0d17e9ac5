"""Finding candidates about keys, shaped for tether.govern's catalog.

Each `KeyFinding` maps 1:1 onto a govern finding: `rule` is the rule id (its title,
severity and OWASP NHI / NIST CSF 2.0 mapping are tether.model's RULES, the one catalog;
KEY_RULES is its key part), `subject` tells apart findings of one rule on one identity
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
from tether.model import KEY_SERVICE_RULES, RULES, Identity, IdentityStatus, Profile, Rule
from tether.policy import KEY_PROVIDER
from tether.store import ApiTokenRecord, KeyUsageCount

#: The API token role that administers keys.
ADMIN_ROLE = "key-admin"
_OWNER_ROLE = "owner:"

#: The rules key findings are raised under: tether.model's RULES, its key-* part.
KEY_RULES: Mapping[str, Rule] = {r: RULES[r] for r in sorted(KEY_SERVICE_RULES)}


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
    severity = KEY_RULES[rule].severity.value
    return KeyFinding(rule, key, identity_id, severity, subject, evidence, fix)


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


def live_roles(tokens: Iterable[ApiTokenRecord], now: dt.datetime) -> dict[str, set[str]]:
    """Principal name (an API token's name) -> the roles its live API tokens hold
    (neither revoked nor expired)."""
    out: dict[str, set[str]] = {}
    for token in tokens:
        if _live(token, now):
            out.setdefault(token.name, set()).update(token.roles)
    return out


def admin_tokens(tokens: Iterable[ApiTokenRecord], now: dt.datetime) -> dict[str, list[str]]:
    """Principal name -> ids of its live API tokens holding the key-admin role."""
    out: dict[str, list[str]] = {}
    for token in tokens:
        if _live(token, now) and ADMIN_ROLE in token.roles:
            out.setdefault(token.name, []).append(token.id)
    return {name: sorted(ids) for name, ids in out.items()}


def _live(token: ApiTokenRecord, now: dt.datetime) -> bool:
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


def key_using_owners(
    identities: Iterable[Identity], profiles: Mapping[str, Profile]
) -> dict[str, list[str]]:
    """Owner id -> its identities (not retired) entitled to a profile of provider key:
    the owners whose workloads can use keys."""
    out: dict[str, list[str]] = {}
    for identity in identities:
        if identity.status is IdentityStatus.RETIRED:
            continue
        for entitlement in identity.entitlements:
            profile = profiles.get(entitlement.profile_id)
            if profile is not None and profile.provider == KEY_PROVIDER:
                out.setdefault(identity.owner_id, []).append(identity.id)
                break
    return {owner: sorted(ids) for owner, ids in out.items()}


def role_conflicts(
    assignments: Mapping[str, Iterable[str]],
    key_owners: Mapping[str, Sequence[str]],
    admin_token_ids: Mapping[str, Sequence[str]] | None = None,
) -> list[KeyFinding]:
    """A finding per principal that both administers and can use keys: it holds the
    key-admin role (`assignments`: principal name -> roles of its live API tokens), and
    its name is, or it holds `owner:<id>` for, an owner whose identities are entitled to
    a profile of provider key (`key_owners`: owner id -> those identities, from
    `key_using_owners`). `admin_token_ids` (principal -> its key-admin tokens) is
    evidence only."""
    out = []
    for principal, roles in sorted(assignments.items()):
        held = set(roles)
        if ADMIN_ROLE not in held:
            continue
        owners = sorted(
            owner for owner in key_owners if owner == principal or f"{_OWNER_ROLE}{owner}" in held
        )
        if not owners:
            continue
        identities = sorted({i for owner in owners for i in key_owners[owner]})
        out.append(
            _finding(
                "key-role-conflict",
                "",
                None,
                f"principal:{principal}",
                {
                    "principal": principal,
                    "roles": [ADMIN_ROLE]
                    + [f"{_OWNER_ROLE}{o}" for o in owners if f"{_OWNER_ROLE}{o}" in held],
                    "key_admin_tokens": list((admin_token_ids or {}).get(principal, ())),
                    "owners": owners,
                    "key_using_identities": identities[:32],
                },
                f"revoke {principal}'s {ADMIN_ROLE} token, or move the ownership of "
                f"{', '.join(owners)}'s key-using identities to another principal",
            )
        )
    return out
