"""Policy decisions in-process: 200 schema-validated, pre-parsed policies (design.md §6).

The policies are a realistic mix: forbids on environment, criticality, time of day,
intent, claims, source network and TTL; permits for teams and renewals; a few scoped to
one identity or profile. Requests cycle through identities and profiles so both allows
and denies (by a forbid, and by no permit) are measured.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

from tether.model import Approval, Criticality, Identity, Kind, Policy, Profile
from tether.policy import PolicyEngine, PolicyRequest

UTC = dt.UTC
KINDS = [k.value for k in Kind]
ENVIRONMENTS = ["prod", "staging", "dev"]
CRITICALITIES = [c.value for c in Criticality]


def policies(n: int = 200) -> list[Policy]:
    """`n` policy files of one statement each, cycling through realistic shapes."""
    shapes = [
        lambda i: (
            f'forbid (principal, action, resource) when {{ principal.environment == "prod" && '
            f'principal.kind == "{KINDS[i % len(KINDS)]}" && context.utc_hour == {i % 24} && '
            f'principal.owner == "team-{i % 40}" }};'
        ),
        lambda i: (
            "forbid (principal, action, resource) when { context has intent && "
            f'context.intent like "*drop-table-{i}*" }};'
        ),
        lambda i: (
            f'forbid (principal, action, resource) when {{ principal.criticality == "critical" && '
            f'!context.attested && resource.provider == "postgres" && '
            f'principal.owner == "team-{i % 40}" }};'
        ),
        lambda i: (
            "forbid (principal, action, resource) when { context.claims has repository && "
            f'context.claims.repository like "untrusted-{i}/*" }};'
        ),
        lambda i: (
            "forbid (principal, action, resource) when { context has source_ip && "
            f'principal.environment == "prod" && principal.owner == "team-{i % 40}" && '
            '!context.source_ip.isInRange(ip("10.0.0.0/8")) };'
        ),
        lambda i: (
            "forbid (principal, action, resource) when { "
            f"context.requested_ttl_seconds > {600 + i} && "
            f'principal.kind == "agent" && principal.owner == "team-{i % 40}" }};'
        ),
        lambda i: (
            f'permit (principal, action == Tether::Action::"renew", resource) when {{ '
            f'principal.owner == "team-{i % 40}" && context.entitled && '
            f'principal.status == "active" && context.attested }};'
        ),
        lambda i: f'forbid (principal == Tether::Identity::"nhi-{i:05d}", action, resource);',
        lambda i: (
            f'forbid (principal, action, resource == Tether::Profile::"profile-{i % 7}") when {{ '
            f'principal.environment != "prod" && principal.has_approval && '
            "principal has approval_expires && "
            f"principal.approval_expires < context.now + {86400 * (i % 5 + 1)} }};"
        ),
        lambda i: (
            'forbid (principal, action, resource) when { principal.hasTag("system") && '
            f'principal.getTag("system") == "legacy-{i}" && context.scopes.contains("admin") }};'
        ),
    ]
    return [
        Policy(id=f"policies/p{i:03d}.cedar", source=shapes[i % len(shapes)](i) + "\n")
        for i in range(n)
    ]


def identities(n: int) -> list[Identity]:
    return [
        Identity(
            id=f"nhi-{i:05d}",
            kind=Kind(KINDS[i % len(KINDS)]),
            owner_id=f"team-{i % 40}",
            purpose=f"Purpose {i}",
            justification=f"CHG-{i}",
            environment=ENVIRONMENTS[i % 3],
            region="eu-west-1",
            criticality=Criticality(CRITICALITIES[i % 4]),
            approval=Approval("dana@example.com", dt.datetime(2027, 1, 31, tzinfo=UTC)),
            labels={"system": f"sys-{i % 100}"},
        )
        for i in range(n)
    ]


PROFILES = [
    Profile(
        id=f"profile-{p}",
        provider=["jwt", "postgres", "token"][p % 3],
        max_ttl=dt.timedelta(hours=1),
        scopes=("read", "list", "write"),
        audience=f"https://api-{p}.example.com" if p % 3 == 0 else None,
        target=f"db-{p}" if p % 3 == 1 else None,
    )
    for p in range(7)
]


def requests(n: int, population: list[Identity]) -> list[PolicyRequest]:
    """`n` requests from `population`: each identity keeps its profile, issuer and repository,
    while time, task, intent, source address and per-run claims change on every request."""
    start = dt.datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        who = i % len(population)
        identity = population[who]
        out.append(
            PolicyRequest(
                identity=identity,
                action=["issue", "renew", "exchange"][(i // len(population)) % 3],
                profile=PROFILES[who % len(PROFILES)],
                entitled_scopes=("read", "list"),
                requested_scopes=("read",),
                requested_ttl=dt.timedelta(minutes=5 + i % 10),
                now=start + dt.timedelta(seconds=7 * i),
                attested=who % 5 != 0,
                issuer_id="github",
                claims={
                    "repository": f"acme/repo-{who % 50}",
                    "ref": "refs/heads/main",
                    "run_id": str(100_000 + i),
                    "sha": f"{i:040x}",
                },
                task_id=f"task-{i}",
                intent=f"deploy build {i}",
                source_ip=f"10.0.{i % 256}.7",
                kind_max_ttl=dt.timedelta(hours=1),
            )
        )
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _timed(engine: PolicyEngine, batch: list[PolicyRequest]) -> tuple[list[float], int]:
    timings = []
    allowed = 0
    clock = time.perf_counter
    for request in batch:
        t0 = clock()
        decision = engine.evaluate(request)
        timings.append(clock() - t0)
        allowed += decision.allowed
    return timings, allowed


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    del tmp  # nothing is written
    started = time.perf_counter()
    engine = PolicyEngine.compile(policies(200))
    compile_seconds = time.perf_counter() - started
    population = identities(300)
    # Each (identity, action) pair is seen once (evaluated against the whole set), a
    # second time (its slice is built), then served from its slice: a server's steady
    # state. The first two rounds are reported apart from the steady state.
    rounds = requests(3 * 3 * len(population), population)
    per_round = 3 * len(population)
    first, _ = _timed(engine, rounds[:per_round])
    building, _ = _timed(engine, rounds[per_round : 2 * per_round])
    _timed(engine, rounds[2 * per_round :])
    batch = requests(3_000 if quick else 30_000, population)
    timings, allowed = _timed(engine, batch)
    micro = sorted(t * 1e6 for t in timings)
    unsliced = PolicyEngine.compile(policies(200), prefilter=False)
    whole, _ = _timed(unsliced, batch[:1_000])
    return {
        "policies": 200,
        "identities": len(population),
        "compile_seconds": round(compile_seconds, 3),
        "decisions": len(batch),
        "allowed": allowed,
        "p50_us": round(_percentile(micro, 0.50), 1),
        "p90_us": round(_percentile(micro, 0.90), 1),
        "p99_us": round(_percentile(micro, 0.99), 1),
        "mean_us": round(statistics.fmean(micro), 1),
        "decisions_per_second": round(len(batch) / sum(timings)),
        "first_sighting_p50_us": round(_percentile(sorted(t * 1e6 for t in first), 0.5), 1),
        "slice_build_p50_ms": round(_percentile(sorted(t * 1e3 for t in building), 0.5), 2),
        "unsliced_p50_us": round(_percentile(sorted(t * 1e6 for t in whole), 0.5), 1),
    }


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), "--quick" in sys.argv), indent=2))
