"""Requests and policies for the policy tests, built at test time."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from tether.model import Approval, Criticality, Identity, Kind, Policy, Profile, Vendor
from tether.policy import Decision, PolicyEngine, PolicyRequest

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

IDENTITY = Identity(
    id="payments-deployer",
    kind=Kind.WORKLOAD,
    owner_id="team-payments",
    purpose="Deploys the payments service",
    justification="CHG-2041",
    environment="prod",
    system="payments",
    region="eu-west-1",
    criticality=Criticality.HIGH,
    approval=Approval("dana@example.com", dt.datetime(2027, 1, 31, tzinfo=UTC)),
    labels={"team": "payments"},
)
PROFILE = Profile(
    id="orders-api-read",
    provider="jwt",
    max_ttl=dt.timedelta(minutes=15),
    scopes=("orders:read", "orders:list"),
    audience="https://orders.example.com",
)
VENDOR = Vendor("acme-monitoring", "ACME", dt.datetime(2027, 3, 31, tzinfo=UTC))


def request(**changes: Any) -> PolicyRequest:
    """An ordinary attested request that the default policy allows; change what matters."""
    base = PolicyRequest(
        identity=IDENTITY,
        action="issue",
        profile=PROFILE,
        entitled_scopes=("orders:read",),
        requested_scopes=("orders:read",),
        requested_ttl=dt.timedelta(minutes=10),
        now=NOW,
        attested=True,
        issuer_id="github",
        claims={"repository": "acme/payments", "ref": "refs/heads/main"},
        kind_max_ttl=dt.timedelta(hours=1),
    )
    return dataclasses.replace(base, **changes)


def identity(**changes: Any) -> Identity:
    return dataclasses.replace(IDENTITY, **changes)


def engine(*sources: str, include_default: bool = True, prefilter: bool = True) -> PolicyEngine:
    """An engine over inline sources, given ids p0.cedar, p1.cedar, ..."""
    policies = [Policy(f"p{i}.cedar", source) for i, source in enumerate(sources)]
    return PolicyEngine.compile(policies, include_default=include_default, prefilter=prefilter)


def decide(e: PolicyEngine, r: PolicyRequest) -> Decision:
    """Decide three times: against the whole set (first sighting), while the slice is
    built, and from the slice. All three must agree; the decision is returned."""
    first, second, third = e.evaluate(r), e.evaluate(r), e.evaluate(r)
    assert first == second == third, (first, second, third)
    return third
