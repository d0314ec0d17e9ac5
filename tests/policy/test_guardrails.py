"""Guard rails: what no policy can lift, each denying with its id and a useful sentence."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from tests.policy.helpers import NOW, VENDOR, decide, engine, identity, request
from tether.model import Approval, IdentityStatus, Kind
from tether.policy import PolicyEngine

UTC = dt.UTC

#: The widest possible user policy: guard rails must hold against it.
PERMIT_ALL = "permit (principal, action, resource);"


@pytest.fixture(params=[True, False], ids=["with-default", "raw"])
def permissive(request: pytest.FixtureRequest) -> PolicyEngine:
    return engine(PERMIT_ALL, include_default=request.param)


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "identity-inactive",
        {"identity": identity(status=IdentityStatus.RETIRED)},
        "identity payments-deployer is retired",
    ),
    (
        "identity-inactive",
        {"identity": identity(status=IdentityStatus.SUSPENDED)},
        "identity payments-deployer is suspended",
    ),
    (
        "identity-expired",
        {"identity": identity(expires_at=dt.datetime(2026, 5, 1, tzinfo=UTC))},
        "identity payments-deployer expired at 2026-05-01T00:00:00Z",
    ),
    (
        "approval-expired",
        {"now": dt.datetime(2027, 2, 1, tzinfo=UTC)},
        "approval by dana@example.com expired at 2027-01-31T00:00:00Z",
    ),
    (
        "approval-expired",  # expiring exactly now is expired
        {"identity": identity(approval=Approval("dana@example.com", NOW))},
        "approval by dana@example.com expired at 2026-06-01T12:00:00Z",
    ),
    (
        "vendor-contract-ended",
        {
            "identity": identity(vendor_id=VENDOR.id),
            "vendor": dataclasses.replace(
                VENDOR, contract_ends=dt.datetime(2026, 3, 31, tzinfo=UTC)
            ),
        },
        "the contract with vendor acme-monitoring ended at 2026-03-31T00:00:00Z",
    ),
    (
        "vendor-unknown",
        {"identity": identity(vendor_id=VENDOR.id)},
        "vendor acme-monitoring of identity payments-deployer is not known",
    ),
    (
        "not-entitled",
        {"entitled_scopes": None},
        "identity payments-deployer is not entitled to profile orders-api-read",
    ),
    (
        "scope-not-entitled",
        {"requested_scopes": ("orders:read", "orders:list")},
        "identity payments-deployer is not entitled to scope(s) orders:list of profile "
        "orders-api-read (entitled: orders:read)",
    ),
    (
        "scope-not-in-profile",
        {"requested_scopes": ("orders:write",)},
        "profile orders-api-read does not offer scope(s): orders:write",
    ),
    (
        "ttl-exceeds-profile",
        {"requested_ttl": dt.timedelta(minutes=20)},
        "requested TTL 20m exceeds profile orders-api-read's maximum of 15m",
    ),
    (
        "ttl-exceeds-kind",
        {"kind_max_ttl": dt.timedelta(minutes=5)},
        "requested TTL 10m exceeds the 5m cap for kind workload",
    ),
    ("ttl-not-positive", {"requested_ttl": dt.timedelta(0)}, "longer than zero"),
    ("ttl-not-positive", {"requested_ttl": dt.timedelta(seconds=-5)}, "longer than zero"),
    (
        "attestation-required",
        {"attested": False, "attestation_required": True},
        "identity payments-deployer is of kind workload, which must be attested",
    ),
    ("unknown-action", {"action": "delete"}, "unknown action 'delete'"),
]


@pytest.mark.parametrize(
    ("name", "changes", "reason"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_a_guard_rail_denies_whatever_the_policies_say(
    permissive: PolicyEngine, name: str, changes: dict[str, Any], reason: str
) -> None:
    decision = decide(permissive, request(**changes))
    assert not decision.allowed
    assert decision.policy_ids == (f"guardrail:{name}",)
    assert len(decision.reasons) == 1 and reason in decision.reasons[0], decision.reasons
    assert decision.errors == ()
    assert decision.context, "the context is recorded for the audit entry even on a guard rail"


def test_every_broken_guard_rail_is_reported() -> None:
    decision = decide(
        engine(PERMIT_ALL),
        request(
            identity=identity(status=IdentityStatus.SUSPENDED),
            now=dt.datetime(2027, 6, 1, tzinfo=UTC),
            requested_ttl=dt.timedelta(hours=2),
        ),
    )
    assert decision.policy_ids == (
        "guardrail:identity-inactive",
        "guardrail:approval-expired",
        "guardrail:ttl-exceeds-profile",
        "guardrail:ttl-exceeds-kind",
    )
    assert len(decision.reasons) == 4


def test_inside_every_bound_the_request_passes_the_guard_rails() -> None:
    e = engine(PERMIT_ALL, include_default=False)
    fine = request(
        identity=identity(vendor_id=VENDOR.id, kind=Kind.API_KEY),
        vendor=VENDOR,
        requested_ttl=dt.timedelta(minutes=15),  # exactly the profile's cap
        kind_max_ttl=dt.timedelta(minutes=15),
        requested_scopes=(),
        attested=False,
    )
    assert decide(e, fine).allowed


def test_an_unnarrowed_entitlement_allows_every_profile_scope() -> None:
    from tether.model import Entitlement
    from tether.policy import entitled_scopes

    who = identity(entitlements=(Entitlement("orders-api-read"),))
    scopes = entitled_scopes(who, request().profile)
    assert scopes == ("orders:read", "orders:list")
    both = request(identity=who, entitled_scopes=scopes, requested_scopes=scopes)
    assert decide(engine(), both).allowed
    narrowed = identity(entitlements=(Entitlement("orders-api-read", ("orders:read",)),))
    assert entitled_scopes(narrowed, request().profile) == ("orders:read",)
    assert entitled_scopes(identity(entitlements=()), request().profile) is None
