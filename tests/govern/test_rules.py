"""The findings rules on hand-built facts: each rule fires on its planted case, names
its evidence and OWASP/NIST mapping, and stays silent on a clean identity."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from tether.govern._rules import Facts, evaluate
from tether.model import (
    DISCOVERY_RULES,
    KEY_SERVICE_RULES,
    KIND_CONTROL_DEFAULTS,
    RULES,
    Approval,
    Criticality,
    Entitlement,
    GovernanceSettings,
    Identity,
    IdentityStatus,
    IntentSchema,
    Kind,
    Lease,
    LeaseState,
    Owner,
    OwnerStatus,
    Profile,
    Vendor,
)
from tether.static import SecretVersion, StaticCredential
from tether.store import UsageRollup

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
PROFILES = {
    "api-read": Profile(
        "api-read", "jwt", dt.timedelta(minutes=15), ("read", "list"), audience="https://api"
    ),
    "db-ro": Profile(
        "db-ro",
        "postgres",
        dt.timedelta(hours=1),
        target="db",
        grants={"schema": "app", "privileges": ["SELECT"]},
        environment="prod",
    ),
    "db-dev": Profile(
        "db-dev", "postgres", dt.timedelta(hours=1), target="db-dev", environment="dev"
    ),
}
SETTINGS = GovernanceSettings.from_spec({"workstation_sources": ["10.20.0.0/16"]})


def clean_identity(**changes: Any) -> Identity:
    identity = Identity(
        id="svc-orders",
        kind=Kind.WORKLOAD,
        owner_id="team-a",
        purpose="Serves orders",
        justification="CHG-1",
        environment="prod",
        criticality=Criticality.HIGH,
        approval=Approval("dana@example.com", NOW + 200 * DAY),
        attest={"issuer": "gh", "claims": {"repository": "acme/orders", "ref": "refs/heads/main"}},
        entitlements=(Entitlement("api-read", ("read",)), Entitlement("db-ro")),
    )
    return replace(identity, **changes)


def rollup(
    entitlement: str, *, days_ago: float = 1, credential: str = "lse_1", **facets: tuple[str, ...]
) -> UsageRollup:
    at = NOW - dt.timedelta(days=days_ago)
    return UsageRollup(
        identity_id="svc-orders",
        day=at.date(),
        first_seen=at,
        last_seen=at,
        credential=credential,
        entitlement=entitlement,
        count=3,
        facets={"source": ("10.0.0.5",), **facets},
    )


CLEAN_USAGE = (rollup("api-read", scope=("read",)), rollup("db-ro"))


def facts(identity: Identity | None = None, **changes: Any) -> Facts:
    identity = identity or clean_identity()
    base = Facts(
        identity=identity,
        owner=Owner("team-a", "Team A", "a@example.com"),
        vendor=None,
        control=KIND_CONTROL_DEFAULTS[identity.kind],
        thresholds=SETTINGS.thresholds(identity.kind),
        settings=SETTINGS,
        profiles=PROFILES,
        issuer_presets={"gh": "github-actions"},
        usage=CLEAN_USAGE,
        leases=(),
        statics=(),
        static_environments={},
        dynamic_targets=frozenset({"db"}),
        usable_statics=frozenset(),
        exposures=(),
        tracked_since=NOW - 100 * DAY,
        reviewed_at=NOW - 10 * DAY,
        now=NOW,
        interactive=lambda v: v.startswith(SETTINGS.interactive_applications),
    )
    return replace(base, **changes)


def rules_of(f: Facts) -> list[str]:
    return [d.rule for d in evaluate(f)]


def lease(**changes: Any) -> Lease:
    base = Lease("lse_1", "svc-orders", "team-a", "jwt", NOW - DAY, NOW + DAY, LeaseState.ACTIVE)
    return replace(base, **changes)


AGENT_INTENT = IntentSchema(("api-read", "db-ro"))


def agent(schema: IntentSchema | None = AGENT_INTENT, **changes: Any) -> Facts:
    """Facts of the clean identity as an agent declaring its intent (under the
    workload's controls, so that the agent's shorter TTL cap does not spill in)."""
    identity = clean_identity(kind=Kind.AGENT, intent_schema=schema)
    return facts(identity, control=KIND_CONTROL_DEFAULTS[Kind.WORKLOAD], **changes)


def static(**changes: Any) -> StaticCredential:
    version = SecretVersion(1, "current", NOW - 10 * DAY, "fp")
    base = StaticCredential(
        id="legacy-db",
        kind="static",
        owner_id="team-a",
        readers=("svc-orders",),
        overlap=dt.timedelta(hours=1),
        rotate_every=dt.timedelta(days=30),
        last_rotated_at=NOW - 10 * DAY,
        versions=(version,),
    )
    return replace(base, **changes)


def test_a_clean_identity_has_no_finding() -> None:
    assert evaluate(facts()) == []


PLANTED: list[tuple[str, Any, str]] = [
    ("owner unknown", lambda: facts(owner=None), "orphaned"),
    (
        "owner departed",
        lambda: facts(owner=Owner("team-a", "A", "a@x", OwnerStatus.DEPARTED, NOW - DAY)),
        "orphaned",
    ),
    (
        "dormant",
        lambda: facts(usage=(rollup("api-read", days_ago=120, scope=("read",)),)),
        "dormant",
    ),
    (
        "retired with a live lease",
        lambda: facts(clean_identity(status=IdentityStatus.RETIRED), leases=(lease(),)),
        "retired-usable",
    ),
    (
        "approval expired",
        lambda: facts(clean_identity(approval=Approval("dana@example.com", NOW - DAY))),
        "approval-expired",
    ),
    (
        "approval expiring",
        lambda: facts(clean_identity(approval=Approval("dana@example.com", NOW + 3 * DAY))),
        "approval-expiring",
    ),
    (
        "vendor ended",
        lambda: facts(clean_identity(vendor_id="acme"), vendor=Vendor("acme", "Acme", NOW - DAY)),
        "vendor-ended",
    ),
    (
        "vendor ending",
        lambda: facts(
            clean_identity(vendor_id="acme"), vendor=Vendor("acme", "Acme", NOW + 5 * DAY)
        ),
        "vendor-ending",
    ),
    (
        "entitlement unused",
        lambda: facts(usage=(rollup("api-read", scope=("read",)),)),
        "over-privileged",
    ),
    ("old lease", lambda: facts(leases=(lease(issued_at=NOW - 400 * DAY),)), "long-lived"),
    (
        "static never rotated",
        lambda: facts(statics=(static(last_rotated_at=NOW - 90 * DAY),)),
        "long-lived",
    ),
    (
        "profile of another environment",
        lambda: facts(
            clean_identity(
                entitlements=(
                    Entitlement("api-read", ("read",)),
                    Entitlement("db-ro"),
                    Entitlement("db-dev"),
                )
            ),
            usage=(*CLEAN_USAGE, rollup("db-dev")),
        ),
        "environment-crossing",
    ),
    (
        "attested from another environment",
        lambda: facts(usage=(*CLEAN_USAGE, rollup("db-ro", environment=("staging",)))),
        "environment-crossing",
    ),
    (
        "one credential, several sources",
        lambda: facts(usage=(*CLEAN_USAGE, rollup("db-ro", source=("10.0.0.5", "10.9.9.9")))),
        "reuse",
    ),
    (
        "several subjects",
        lambda: facts(
            usage=(
                *CLEAN_USAGE,
                rollup("db-ro", credential="lse_2", subject=("repo:a/x", "repo:b/y")),
            )
        ),
        "reuse",
    ),
    (
        "psql",
        lambda: facts(usage=(*CLEAN_USAGE, rollup("db-ro", application=("psql",)))),
        "human-use",
    ),
    (
        "browser",
        lambda: facts(usage=(*CLEAN_USAGE, rollup("db-ro", user_agent=("Mozilla/5.0 (X11)",)))),
        "human-use",
    ),
    (
        "workstation source",
        lambda: facts(
            usage=(*CLEAN_USAGE, rollup("db-ro", credential="lse_9", source=("10.20.1.7",)))
        ),
        "human-use",
    ),
    ("no attestation rule", lambda: facts(clean_identity(attest=None)), "insecure-authentication"),
    (
        "glob in a prod rule",
        lambda: facts(clean_identity(attest={"issuer": "gh", "claims": {"repository": "acme/*"}})),
        "insecure-authentication",
    ),
    (
        "a prod unix rule that names only the user",
        lambda: facts(clean_identity(attest={"unix": {"uid": 1001}})),
        "insecure-authentication",
    ),
    (
        "static where dynamic exists",
        lambda: facts(statics=(static(kind="postgres", target="db", users=("a", "b")),)),
        "insecure-authentication",
    ),
    (
        "exposed",
        lambda: facts(
            exposures=(
                {
                    "credential": "legacy-db",
                    "at": "2026-11-30T00:00:00Z",
                    "evidence": "found in a gist",
                },
            )
        ),
        "leaked",
    ),
    (
        "revocation stuck",
        lambda: facts(
            leases=(
                lease(
                    state=LeaseState.REVOKING,
                    next_attempt_at=NOW - dt.timedelta(minutes=16),
                    target="db",
                ),
            )
        ),
        "revocation-stuck",
    ),
    (
        "high criticality without approval",
        lambda: facts(clean_identity(approval=None)),
        "metadata-missing",
    ),
    ("review overdue", lambda: facts(reviewed_at=NOW - 400 * DAY), "review-overdue"),
    (
        "agent without an intent schema",
        lambda: agent(None),
        "agent-intent-undeclared",
    ),
    (
        "agent run refused a tool outside its intent",
        lambda: agent(
            usage=(
                *CLEAN_USAGE,
                rollup("", credential="", action=("intent.violation",), resource=("db-admin",)),
            )
        ),
        "agent-outside-intent",
    ),
    (
        "live lease three hops deep",
        lambda: agent(leases=(lease(delegation=("agent-b", "agent-c", "svc-x")),)),
        "delegation-chain-long",
    ),
    (
        "departed person still lets the agent act",
        lambda: agent(departed_principals=("p-bob",)),
        "agent-principal-departed",
    ),
]


@pytest.mark.parametrize(("case", "build", "rule"), PLANTED, ids=[p[0] for p in PLANTED])
def test_each_planted_case_is_found_by_its_rule(case: str, build: Any, rule: str) -> None:
    found = evaluate(build())
    assert rule in [d.rule for d in found], case
    # Only this rule: a planted case does not spill into unrelated findings.
    assert {d.rule for d in found} == {rule}, case


def test_every_rule_of_the_catalog_has_a_planted_case_and_a_mapping() -> None:
    planted = {rule for _, _, rule in PLANTED}
    # Key rules are the key service's (tests/keys, tests/govern/test_key_findings.py).
    assert planted == set(RULES) - DISCOVERY_RULES - KEY_SERVICE_RULES
    for rule in RULES.values():
        assert rule.owasp_nhi and all(c.startswith("NHI") for c in rule.owasp_nhi)
        assert rule.nist_csf and all("." in c and "-" in c for c in rule.nist_csf)


def test_over_privileged_recommends_the_exact_narrower_entitlement() -> None:
    wide = clean_identity(entitlements=(Entitlement("api-read"), Entitlement("db-ro")))
    [draft] = evaluate(facts(wide))
    assert draft.rule == "over-privileged"
    assert draft.evidence["unused_scopes"] == ["list"]
    assert draft.recommendation == "narrow api-read to scopes: read"


def test_nothing_is_called_unused_before_the_window_has_been_watched() -> None:
    assert rules_of(facts(usage=(), tracked_since=NOW - 5 * DAY)) == []


def test_dormancy_follows_the_per_kind_threshold() -> None:
    settings = GovernanceSettings.from_spec({"kinds": {"workload": {"dormant_after": "7d"}}})
    old = (rollup("api-read", days_ago=10, scope=("read",)), rollup("db-ro", days_ago=10))
    f = facts(usage=old, settings=settings, thresholds=settings.thresholds(Kind.WORKLOAD))
    assert rules_of(f) == ["dormant"]
    assert rules_of(replace(f, thresholds=SETTINGS.thresholds(Kind.WORKLOAD))) == []


def test_a_static_secret_readable_from_prod_and_dev_crosses_environments() -> None:
    f = facts(statics=(static(),), static_environments={"legacy-db": frozenset({"prod", "dev"})})
    [draft] = evaluate(f)
    assert draft.rule == "environment-crossing"
    assert draft.evidence["readable_from"] == ["dev", "prod"]


def test_a_revocation_retried_with_backoff_is_stuck_since_it_began() -> None:
    # Three failed attempts moved the next one on by 2 + 4 + 8 seconds from the start.
    began = NOW - dt.timedelta(minutes=14, seconds=50)
    retried = lease(
        state=LeaseState.REVOKING,
        revoke_attempts=3,
        next_attempt_at=began + dt.timedelta(seconds=14),
    )
    assert rules_of(facts(leases=(retried,))) == []
    assert rules_of(facts(leases=(retried,), now=NOW + dt.timedelta(seconds=11))) == [
        "revocation-stuck"
    ]


def test_human_use_long_ago_is_outside_the_evidence_window() -> None:
    old_psql = rollup("db-ro", days_ago=45, application=("psql",))
    assert rules_of(facts(usage=(*CLEAN_USAGE, old_psql))) == []
    assert rules_of(facts(usage=(*CLEAN_USAGE, replace(old_psql, last_seen=NOW - DAY)))) == [
        "human-use"
    ]


def test_a_unix_rule_that_names_the_binary_is_not_broad() -> None:
    for rule in ({"uid": 1001, "path": "/usr/bin/orders"}, {"uid": 1001, "sha256": "ab" * 32}):
        found = evaluate(facts(clean_identity(attest={"unix": rule})))
        assert "insecure-authentication" not in {d.rule for d in found}, rule


def test_a_clean_agent_raises_nothing() -> None:
    # Declared intent, no refused runs, a two-hop chain, no departed principal.
    assert rules_of(agent(leases=(lease(delegation=("agent-b", "svc-x")),))) == []
