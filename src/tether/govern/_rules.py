"""The findings rules: pure functions from one identity's facts to its findings.

Each rule returns drafts keyed by (rule, subject): the subject tells apart several
findings of one rule on one identity (one per unused entitlement, per reused
credential). The engine turns drafts into stored findings with their state and times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_duration, format_time
from tether.lease import backoff
from tether.model import (
    ControlProfile,
    Criticality,
    GovernanceSettings,
    Identity,
    IdentityStatus,
    Kind,
    Lease,
    LeaseState,
    Owner,
    Profile,
    Thresholds,
    Vendor,
)
from tether.static import StaticCredential
from tether.store import UsageRollup

#: Claims whose value says which code or workload a token speaks for: a glob in one of
#: them on a production identity lets other repositories or namespaces attest as it.
_NARROWING_CLAIMS = {
    "github-actions": ("repository",),
    "kubernetes": ("namespace", "service_account", "kubernetes.io/namespace", "sub"),
}
_GLOB = ("*", "?", "[")
_PROD = ("prod", "production")
#: The usage action issuance records when an agent run is refused a tool outside its
#: declared intent (tether.issuance.INTENT_VIOLATION; govern does not import issuance).
INTENT_VIOLATION = "intent.violation"
#: Hops of delegation (RFC 8693 actors) from which a live credential's chain is long:
#: each hop is one more party whose compromise speaks for the identity.
DELEGATION_CHAIN_LONG = 3


@dataclass(frozen=True, slots=True)
class Draft:
    rule: str
    subject: str
    evidence: Mapping[str, Any]
    recommendation: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the rules look at for one identity, gathered by the engine."""

    identity: Identity
    owner: Owner | None
    vendor: Vendor | None
    control: ControlProfile
    thresholds: Thresholds
    settings: GovernanceSettings
    profiles: Mapping[str, Profile]
    issuer_presets: Mapping[str, str]
    usage: Sequence[UsageRollup]
    #: Live leases and those still revoking.
    leases: Sequence[Lease]
    #: Static secrets this identity may read.
    statics: Sequence[StaticCredential]
    #: Per static secret: the environments of every identity that may read it.
    static_environments: Mapping[str, frozenset[str]]
    #: Targets some profile issues dynamic credentials for.
    dynamic_targets: frozenset[str]
    #: Static secrets of this identity whose users still log in at their target.
    usable_statics: frozenset[str]
    #: Exposures reported within the window: {"credential", "at", "evidence", "seq"}.
    exposures: Sequence[Mapping[str, Any]]
    #: Since when governance has watched this identity (its first evaluation).
    tracked_since: dt.datetime
    reviewed_at: dt.datetime | None
    now: dt.datetime
    interactive: Callable[[str], bool] = field(default=lambda _v: False)
    #: Departed people whose `may_act` still names this identity.
    departed_principals: tuple[str, ...] = ()
    #: The usage within the evidence window, and every facet's values across it
    #: (computed: several rules read them).
    recent: tuple[UsageRollup, ...] = field(init=False)
    seen: Mapping[str, frozenset[str]] = field(init=False)

    def __post_init__(self) -> None:
        since = self.now - self.thresholds.evidence_window
        recent = tuple(r for r in self.usage if r.last_seen > since)
        union: dict[str, set[str]] = {}
        for rollup in recent:
            for name, values in rollup.facets.items():
                union.setdefault(name, set()).update(values)
        object.__setattr__(self, "recent", recent)
        object.__setattr__(self, "seen", {k: frozenset(v) for k, v in union.items()})

    def facet(self, name: str) -> frozenset[str]:
        return self.seen.get(name, frozenset())


Rule = Callable[[Facts], Iterable[Draft]]


def _last_use(facts: Facts) -> dt.datetime | None:
    return max((r.last_seen for r in facts.usage), default=None)


def _facet(rollups: Iterable[UsageRollup], name: str) -> set[str]:
    out: set[str] = set()
    for rollup in rollups:
        out.update(rollup.facets.get(name, ()))
    return out


def orphaned(f: Facts) -> Iterable[Draft]:
    owner_id = f.identity.owner_id
    if f.owner is None:
        yield Draft(
            "orphaned",
            owner_id,
            {"owner": owner_id, "status": "unknown"},
            f"assign {f.identity.id} to a live owner, or retire it",
        )
    elif f.owner.departed:
        suspends = f.settings.suspends_at(f.owner)
        yield Draft(
            "orphaned",
            owner_id,
            {
                "owner": owner_id,
                "status": "departed",
                "left": format_time(f.owner.left) if f.owner.left else None,
                "action": f.settings.orphaned.value,
                "suspended_since": format_time(suspends) if suspends else None,
            },
            f"assign {f.identity.id} to a live owner, or retire it",
        )


def dormant(f: Facts) -> Iterable[Draft]:
    if f.identity.status is not IdentityStatus.ACTIVE:
        return
    window = f.thresholds.dormant_after
    last = _last_use(f)
    since = last or f.tracked_since
    if since <= f.now - window:
        yield Draft(
            "dormant",
            "",
            {
                "last_used": format_time(last) if last else None,
                "watched_since": format_time(f.tracked_since),
                "dormant_after": format_duration(window),
            },
            f"retire {f.identity.id}, or record why it must stay",
        )


def retired_usable(f: Facts) -> Iterable[Draft]:
    if f.identity.status is not IdentityStatus.RETIRED:
        return
    live = [lease for lease in f.leases if lease.state.live or lease.state is LeaseState.REVOKING]
    working = [
        s.id for s in f.statics if s.id in f.usable_statics or (s.target is None and _current(s))
    ]
    if live or working:
        yield Draft(
            "retired-usable",
            "",
            {
                "leases": sorted(lease.id for lease in live)[:50],
                "targets": sorted({lease.target for lease in live if lease.target}),
                "static_credentials": sorted(working),
            },
            "revoke the remaining credentials and rotate the static secrets away",
        )


def _current(credential: StaticCredential) -> bool:
    return any(v.state in ("current", "previous") for v in credential.versions)


def approval(f: Facts) -> Iterable[Draft]:
    approved = f.identity.approval
    if approved is None or f.identity.status is IdentityStatus.RETIRED:
        return
    evidence = {"approved_by": approved.by, "expires": format_time(approved.expires_at)}
    if approved.expires_at <= f.now:
        yield Draft("approval-expired", "", evidence, "renew the approval or retire the identity")
    elif approved.expires_at <= f.now + f.thresholds.approval_warning:
        yield Draft("approval-expiring", "", evidence, "renew the approval before it expires")


def vendor(f: Facts) -> Iterable[Draft]:
    if f.identity.vendor_id is None or f.identity.status is IdentityStatus.RETIRED:
        return
    if f.vendor is None:
        yield Draft(
            "vendor-ended",
            f.identity.vendor_id,
            {"vendor": f.identity.vendor_id, "status": "unknown"},
            "offboard the identity or declare the vendor",
        )
        return
    evidence = {"vendor": f.vendor.id, "contract_ends": format_time(f.vendor.contract_ends)}
    if f.vendor.contract_ends <= f.now:
        yield Draft("vendor-ended", f.vendor.id, evidence, "offboard the vendor's identity")
    elif f.vendor.contract_ends <= f.now + f.thresholds.vendor_warning:
        yield Draft("vendor-ending", f.vendor.id, evidence, "plan the vendor's offboarding")


def over_privileged(f: Facts) -> Iterable[Draft]:
    if f.identity.status is not IdentityStatus.ACTIVE:
        return
    window = f.thresholds.unused_entitlement_after
    if f.tracked_since > f.now - window:
        return  # not watched long enough to call anything unused
    if (_last_use(f) or f.tracked_since) <= f.now - f.thresholds.dormant_after:
        return  # dormant: the whole identity is the finding, not each grant
    recent = [r for r in f.usage if r.last_seen > f.now - window]
    for entitlement in f.identity.entitlements:
        profile = f.profiles.get(entitlement.profile_id)
        if profile is None:
            continue
        used = [r for r in recent if r.entitlement == profile.id]
        granted = profile.scopes if entitlement.scopes is None else entitlement.scopes
        if not used:
            yield Draft(
                "over-privileged",
                profile.id,
                {
                    "profile": profile.id,
                    "granted_scopes": list(granted),
                    "used": 0,
                    "unused_for": format_duration(window),
                },
                f"revoke the entitlement to {profile.id}",
            )
            continue
        scopes_used = _facet(used, "scope")
        unused = [s for s in granted if s not in scopes_used]
        if unused and granted:
            keep = [s for s in granted if s in scopes_used]
            yield Draft(
                "over-privileged",
                profile.id,
                {
                    "profile": profile.id,
                    "granted_scopes": list(granted),
                    "used_scopes": keep,
                    "unused_scopes": unused,
                    "unused_for": format_duration(window),
                },
                f"narrow {profile.id} to scopes: {', '.join(keep)}",
            )


def long_lived(f: Facts) -> Iterable[Draft]:
    control, now = f.control, f.now
    limit = control.rotate_every or f.thresholds.credential_max_age
    old = [lease for lease in f.leases if lease.state.live and lease.issued_at <= now - limit]
    if old:
        yield Draft(
            "long-lived",
            "leases",
            {
                "leases": sorted(lease.id for lease in old)[:50],
                "older_than": format_duration(limit),
            },
            "re-issue short-lived credentials instead of keeping these",
        )
    for credential in f.statics:
        if credential.owner_id != f.identity.owner_id and f.identity.id not in credential.readers:
            continue
        interval = (
            credential.rotate_every or control.rotate_every or f.thresholds.credential_max_age
        )
        never = len(credential.versions) <= 1
        if credential.last_rotated_at <= now - interval:
            yield Draft(
                "long-lived",
                f"credential:{credential.id}",
                {
                    "credential": credential.id,
                    "last_rotated_at": format_time(credential.last_rotated_at),
                    "never_rotated": never,
                    "rotate_every": format_duration(interval),
                },
                f"rotate {credential.id} (tether credential rotate {credential.id})",
            )
    for entitlement in f.identity.entitlements:
        profile = f.profiles.get(entitlement.profile_id)
        if profile is not None and profile.max_ttl > control.max_ttl:
            yield Draft(
                "long-lived",
                f"profile:{profile.id}",
                {
                    "profile": profile.id,
                    "max_ttl": format_duration(profile.max_ttl),
                    "kind_cap": format_duration(control.max_ttl),
                },
                f"lower {profile.id}'s max_ttl to {format_duration(control.max_ttl)}",
            )


def environment_crossing(f: Facts) -> Iterable[Draft]:
    home = f.identity.environment
    for entitlement in f.identity.entitlements:
        profile = f.profiles.get(entitlement.profile_id)
        if profile is not None and profile.environment and profile.environment != home:
            yield Draft(
                "environment-crossing",
                f"profile:{profile.id}",
                {
                    "profile": profile.id,
                    "profile_environment": profile.environment,
                    "identity_environment": home,
                },
                f"give {f.identity.id} a profile of {home}, or move it",
            )
    attested = sorted(e for e in f.facet("environment") if e != home)
    if attested:
        yield Draft(
            "environment-crossing",
            "attested",
            {"attested_environments": attested, "identity_environment": home},
            "bind the attestation rule to the identity's environment",
        )
    for credential in f.statics:
        environments = f.static_environments.get(credential.id, frozenset())
        prod = {e for e in environments if e in _PROD}
        if prod and environments - prod:
            yield Draft(
                "environment-crossing",
                f"credential:{credential.id}",
                {"credential": credential.id, "readable_from": sorted(environments)},
                f"split {credential.id} into one secret per environment",
            )


def reuse(f: Facts) -> Iterable[Draft]:
    settings = f.settings
    by_credential: dict[str, list[UsageRollup]] = {}
    for rollup in f.recent:
        if rollup.credential:
            by_credential.setdefault(rollup.credential, []).append(rollup)
    for credential, rollups in sorted(by_credential.items()):
        sources = _facet(rollups, "source")
        workloads = {a for a in _facet(rollups, "application") if not f.interactive(a)}
        if len(sources) > settings.reuse_max_sources or len(workloads) > 1:
            yield Draft(
                "reuse",
                f"credential:{credential}",
                {
                    "credential": credential,
                    "sources": sorted(sources)[:32],
                    "workloads": sorted(workloads)[:32],
                },
                "issue one credential per workload",
            )
    subjects = f.facet("subject")
    if len(subjects) > settings.reuse_max_subjects:
        yield Draft(
            "reuse",
            "subjects",
            {"subjects": sorted(subjects)[:32]},
            "register one identity per workload; narrow the attestation rule",
        )


def human_use(f: Facts) -> Iterable[Draft]:
    applications = sorted(a for a in f.facet("application") if f.interactive(a))
    agents = sorted(
        a
        for a in f.facet("user_agent")
        if any(a.startswith(p) for p in f.settings.interactive_agents)
    )
    workstations = sorted(s for s in f.facet("source") if f.settings.is_workstation(s))
    if applications or agents or workstations:
        yield Draft(
            "human-use",
            "",
            {
                "applications": applications,
                "user_agents": agents,
                "workstation_sources": workstations,
            },
            "give the person their own (human) access; keep this identity for the workload",
        )


def insecure_authentication(f: Facts) -> Iterable[Draft]:
    identity = f.identity
    if f.control.attestation_required and identity.attest is None:
        yield Draft(
            "insecure-authentication",
            "no-attestation-rule",
            {"kind": identity.kind.value, "attestation_required": True},
            f"add an attestation rule to {identity.id} (it is refused issuance until then)",
        )
    unix = identity.unix_rule
    if unix is not None:
        # Any program the user runs passes a rule that names only the user: a production
        # workload's binary is named (path) or, better, pinned (sha256).
        if identity.environment in _PROD and not ({"path", "sha256"} & set(unix)):
            yield Draft(
                "insecure-authentication",
                "broad-attestation-rule",
                {"unix": dict(unix), "missing_selectors": ["path", "sha256"]},
                "name the workload's binary in the unix rule (path, or its sha256)",
            )
    elif identity.attest is not None:
        claims = identity.attest.get("claims", {})
        preset = f.issuer_presets.get(identity.attest.get("issuer", ""), "oidc")
        globbed = sorted(
            k for k, v in claims.items() if isinstance(v, str) and any(g in v for g in _GLOB)
        )
        missing = [c for c in _NARROWING_CLAIMS.get(preset, ())[:1] if c not in claims]
        if identity.environment in _PROD and (globbed or missing):
            yield Draft(
                "insecure-authentication",
                "broad-attestation-rule",
                {
                    "issuer": identity.attest.get("issuer"),
                    "glob_claims": globbed,
                    "missing_claims": missing,
                },
                "bind the rule to one repository or namespace, without globs",
            )
    for credential in f.statics:
        if credential.target and credential.target in f.dynamic_targets:
            yield Draft(
                "insecure-authentication",
                f"credential:{credential.id}",
                {"credential": credential.id, "target": credential.target},
                f"replace {credential.id} with a dynamic profile on {credential.target}",
            )


def leaked(f: Facts) -> Iterable[Draft]:
    for exposure in f.exposures:
        yield Draft(
            "leaked",
            f"credential:{exposure['credential']}",
            dict(exposure),
            f"confirm {exposure['credential']} was rotated everywhere it is used",
        )


def revocation_stuck(f: Facts) -> Iterable[Draft]:
    cutoff = f.now - f.thresholds.revocation_stuck_after
    stuck = [
        lease
        for lease in f.leases
        if lease.state is LeaseState.REVOKING and revoking_since(lease, f.now) <= cutoff
    ]
    if stuck:
        yield Draft(
            "revocation-stuck",
            "",
            {
                "leases": sorted(lease.id for lease in stuck)[:50],
                "targets": sorted({lease.target for lease in stuck if lease.target}),
                "attempts": max(lease.revoke_attempts for lease in stuck),
            },
            "restore the target's reachability; Tether retries until confirmed",
        )


def revoking_since(lease: Lease, now: dt.datetime) -> dt.datetime:
    """When a lease began revoking. The store keeps the next attempt's time, which the
    first attempt set to the start and each failure moved on by its backoff."""
    if lease.next_attempt_at is None:
        return now
    waited = sum((backoff(n) for n in range(1, lease.revoke_attempts + 1)), dt.timedelta(0))
    return lease.next_attempt_at - waited


def metadata_missing(f: Facts) -> Iterable[Draft]:
    identity = f.identity
    missing = [name for name in ("purpose", "justification") if not getattr(identity, name).strip()]
    if (
        identity.criticality in (Criticality.HIGH, Criticality.CRITICAL)
        and identity.approval is None
    ):
        missing.append("approval")
    if missing:
        yield Draft(
            "metadata-missing",
            "",
            {"missing": missing},
            "declare " + ", ".join(missing) + " in the estate",
        )


def review_overdue(f: Facts) -> Iterable[Draft]:
    if f.identity.status is not IdentityStatus.ACTIVE:
        return
    last = f.reviewed_at or f.tracked_since
    if last <= f.now - f.control.review_every:
        yield Draft(
            "review-overdue",
            "",
            {
                "last_reviewed": format_time(f.reviewed_at) if f.reviewed_at else None,
                "review_every": format_duration(f.control.review_every),
            },
            f"tether review start --owner {f.identity.owner_id}",
        )


def agent_intent(f: Facts) -> Iterable[Draft]:
    identity = f.identity
    if identity.kind is not Kind.AGENT or identity.status is IdentityStatus.RETIRED:
        return
    if identity.intent_schema is None:
        yield Draft(
            "agent-intent-undeclared",
            "",
            {"tools_granted": sorted(e.profile_id for e in identity.entitlements)},
            f"declare {identity.id}'s intent_schema: the tools, resources and data classes "
            "its runs may mean to use",
        )


def agent_outside_intent(f: Facts) -> Iterable[Draft]:
    # Within the evidence window: refusals long ago do not describe the agent now.
    refused = [r for r in f.recent if INTENT_VIOLATION in r.facets.get("action", ())]
    if not refused:
        return
    tools: set[str] = set()
    for rollup in refused:
        resources = rollup.facets.get("resource", ())
        if rollup.facets.get("action") == (INTENT_VIOLATION,):
            tools.update(resources)
        else:  # merged with other use of the same key: only what names a profile
            tools.update(r for r in resources if r in f.profiles)
    yield Draft(
        "agent-outside-intent",
        "",
        {
            "refusals": sum(r.count for r in refused),
            "tools": sorted(tools)[:32],
            "last_refused": format_time(max(r.last_seen for r in refused)),
            "window": format_duration(f.thresholds.evidence_window),
        },
        f"find why {f.identity.id}'s runs reach beyond what they declare; narrow its "
        "entitlements or its prompt, or declare the tool where it is meant",
    )


def delegation_chain_long(f: Facts) -> Iterable[Draft]:
    long = [
        lease
        for lease in f.leases
        if lease.state.live and len(lease.delegation) >= DELEGATION_CHAIN_LONG
    ]
    if long:
        long.sort(key=lambda lease: lease.id)
        yield Draft(
            "delegation-chain-long",
            "",
            {
                "leases": [lease.id for lease in long][:50],
                "chains": {lease.id: list(lease.delegation) for lease in long[:50]},
                "threshold": DELEGATION_CHAIN_LONG,
                "max_delegation_depth": f.identity.delegation_depth,
            },
            f"shorten the delegation to {f.identity.id}: exchange for it nearer its "
            "principal, or lower its max_delegation_depth",
        )


def agent_principal_departed(f: Facts) -> Iterable[Draft]:
    if f.identity.status is IdentityStatus.RETIRED:
        return
    for person in f.departed_principals:
        yield Draft(
            "agent-principal-departed",
            f"person:{person}",
            {"person": person, "status": "departed"},
            f"remove {f.identity.id} from {person}'s may_act",
        )


RULE_FUNCTIONS: tuple[Rule, ...] = (
    orphaned,
    dormant,
    retired_usable,
    approval,
    vendor,
    over_privileged,
    long_lived,
    environment_crossing,
    reuse,
    human_use,
    insecure_authentication,
    leaked,
    revocation_stuck,
    metadata_missing,
    review_overdue,
    agent_intent,
    agent_outside_intent,
    delegation_chain_long,
    agent_principal_departed,
)


def evaluate(facts: Facts) -> list[Draft]:
    """Every finding the rules raise for one identity, in a fixed order."""
    return [draft for rule in RULE_FUNCTIONS for draft in rule(facts)]
