"""Sliced evaluation decides exactly as evaluating every statement does.

The engine specializes the policy set per (principal, resource, action, stable context)
by partial evaluation and prunes what cannot matter. That is an optimization only, so
this compares it with the unsliced engine over generated requests and a policy set
chosen to stress it: conditions on volatile context before and after known attributes,
`||`, `if`, tags, IP ranges, arithmetic that overflows only sometimes (an error must
survive slicing), and statements that fail on known attributes alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from bench.policy_bench import policies as bench_policies

from tests.policy.helpers import request
from tether.model import Approval, Criticality, Identity, Kind, Policy, Profile
from tether.policy import PolicyEngine, PolicyRequest

UTC = dt.UTC
HUGE = 4611686018427387904

# Conditions of forbids, then two statements of other shapes.
CONDITIONS = [
    f'context has intent && context.intent == "overflow" && '
    f"context.requested_ttl_seconds * {HUGE} > 0",
    'principal has approval_expires && principal.environment == "staging" && '
    f"principal.approval_expires * {HUGE} > 0",
    'context.utc_hour > 20 || principal.criticality == "critical"',
    'if context has intent then context.intent like "*nuke*" else principal.environment == "dev"',
    'principal.hasTag("system") && principal.getTag("system") == "sys-3" && '
    'context.scopes.contains("write")',
    "principal has approval && context.now + 86400 > principal.approval.expires",
    'context has source_ip && context.source_ip.isInRange(ip("10.0.1.0/24")) && '
    'resource.provider == "postgres"',
    'context.requested_ttl_seconds > 1800 && principal.kind == "agent"',
    'context has actor && principal.kind != "agent"',
    'context.claims has run_id && context.claims.run_id == "7"',
    'context has task && context.task like "*-13" && principal.environment == "prod"',
    "context.utc_weekday == 7 && context.attested",
    "context.utc_hour == 3 || principal has approval_expires && "
    f'principal.approval_expires * {HUGE} > 0 && principal.environment == "dev"',
    'context.now - 100 > 0 && principal.kind == "nope"',
    f'context has task_name && context.now * {HUGE} > 0 && principal.kind == "nope"',
    "context.entitled_scopes.containsAll(context.scopes) && "
    'context.environment == "dev" && context.utc_hour == 9',
]
TRICKY = [f"forbid (principal, action, resource) when {{ {c} }};" for c in CONDITIONS] + [
    'permit (principal, action == Tether::Action::"renew", resource) when { '
    '!context.attested && principal.kind == "api_key" };',
    'forbid (principal in Tether::Identity::"nhi-00003", action, resource);',
    "forbid (principal, action, resource) unless { context.claims has repository };",
]

NOW = dt.datetime(2026, 6, 1, tzinfo=UTC)
PROFILES = [
    Profile("api", "jwt", dt.timedelta(hours=1), ("read", "list", "write"), "https://api"),
    Profile("db", "postgres", dt.timedelta(hours=1), ("read", "write"), target="db"),
    Profile("opaque", "token", dt.timedelta(hours=1), ("read",)),
]


def identities(rng: random.Random) -> list[Identity]:
    out = []
    for i in range(10):
        approval = None
        if i % 3:
            approval = Approval("dana@example.com", NOW + dt.timedelta(days=rng.choice([0.5, 40])))
        out.append(
            Identity(
                id=f"nhi-{i:05d}",
                kind=list(Kind)[i % len(Kind)],
                owner_id=f"team-{i % 3}",
                purpose="p",
                justification="j",
                environment=["prod", "staging", "dev"][i % 3],
                criticality=list(Criticality)[i % 4],
                approval=approval,
                labels={"system": f"sys-{i % 5}"} if i % 4 else {},
            )
        )
    return out


def base_requests(rng: random.Random, count: int) -> list[PolicyRequest]:
    people = identities(rng)
    out = []
    for _ in range(count):
        profile = rng.choice(PROFILES)
        scopes = tuple(s for s in profile.scopes if rng.random() < 0.6)
        claims = {}
        if rng.random() < 0.8:
            claims["repository"] = rng.choice(["acme/a", "acme/b"])
        if rng.random() < 0.4:
            claims["run_id"] = "7"
        out.append(
            request(
                identity=rng.choice(people),
                profile=profile,
                action=rng.choice(["issue", "renew", "exchange"]),
                attested=rng.random() < 0.8,
                entitled_scopes=profile.scopes,
                requested_scopes=scopes,
                requested_ttl=dt.timedelta(minutes=rng.choice([5, 10, 40])),
                kind_max_ttl=dt.timedelta(hours=1),
                now=NOW + dt.timedelta(hours=rng.randrange(0, 24 * 7)),
                claims=claims,
                intent=rng.choice([None, "deploy", "nuke it", "overflow"]),
                source_ip=rng.choice([None, "10.0.1.5", "10.0.2.5"]),
                task_id=rng.choice([None, "task-13", "task-14"]),
                task_name=rng.choice([None, "nightly"]),
                actor=rng.choice([None, None, "dana@example.com"]),
            )
        )
    return out


def variants(rng: random.Random, base: PolicyRequest) -> list[PolicyRequest]:
    """Requests with the same slice key: only volatile values change, presence does not."""
    out = [base]
    for _ in range(3):
        changes: dict[str, object] = {
            "now": NOW + dt.timedelta(hours=rng.randrange(0, 24 * 7)),
            "requested_ttl": dt.timedelta(minutes=rng.choice([5, 10, 40])),
        }
        if base.intent is not None:
            changes["intent"] = rng.choice(["deploy", "nuke it", "overflow"])
        if base.source_ip is not None:
            changes["source_ip"] = rng.choice(["10.0.1.5", "10.0.2.5"])
        if base.task_id is not None:
            changes["task_id"] = rng.choice(["task-13", "task-14"])
        if "run_id" in base.claims:
            changes["claims"] = {**base.claims, "run_id": rng.choice(["7", "8"])}
        out.append(dataclasses.replace(base, **changes))
    return out


def test_sliced_decisions_equal_unsliced_decisions() -> None:
    rng = random.Random(20260601)
    policies = [Policy(f"t{i:02d}.cedar", source) for i, source in enumerate(TRICKY)]
    policies += bench_policies(60)
    sliced = PolicyEngine.compile(policies)
    whole = PolicyEngine.compile(policies, prefilter=False)
    requests = [v for base in base_requests(rng, 120) for v in variants(rng, base)]
    outcomes = {"allowed": 0, "forbidden": 0, "errors": 0}
    for r in requests:
        expected = whole.evaluate(r)
        assert sliced.evaluate(r) == expected, r
        outcomes["allowed"] += expected.allowed
        outcomes["forbidden"] += bool(not expected.allowed and expected.policy_ids)
        outcomes["errors"] += bool(expected.errors)
    # The comparison means something only if every kind of outcome occurred.
    assert all(outcomes.values()), outcomes
    assert sliced.evaluate_many(requests) == whole.evaluate_many(requests)
    # White box: slices were built, and most hold residuals, not the whole set.
    slices = list(sliced._slicer._slices._items.values())
    assert len(slices) > 50
    assert sum(s.residual for s in slices) > len(slices) // 2
    assert all(s.statements < len(sliced) for s in slices if s.residual)
