"""Deciding requests: the default policy, user forbids and permits, fail closed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from tests.policy.helpers import NOW, PROFILE, decide, engine, identity, request
from tether.model import Criticality, IdentityStatus, Kind
from tether.policy import DEFAULT_POLICY_ID, PolicyRequest

FORBID_X = (
    'forbid (principal, action, resource) when { context has intent && context.intent == "x" };'
)


def test_the_default_policy_permits_an_attested_entitled_request() -> None:
    decision = decide(engine(), request())
    assert decision.allowed
    assert decision.policy_ids == (DEFAULT_POLICY_ID,)
    assert decision.errors == ()
    assert "permitted by tether:default" in decision.reasons[0]


def test_without_attestation_the_default_policy_does_not_permit() -> None:
    decision = decide(engine(), request(attested=False))
    assert not decision.allowed
    assert decision.policy_ids == ()
    assert decision.reasons == (
        "no policy permits issue of profile orders-api-read for identity payments-deployer "
        "(tether:default permits only attested requests)",
    )


def test_a_user_permit_allows_an_unattested_identity_it_names() -> None:
    e = engine('permit (principal, action, resource) when { principal.kind == "api_key" };')
    api_key = request(identity=identity(kind=Kind.API_KEY), attested=False)
    decision = decide(e, api_key)
    assert decision.allowed and decision.policy_ids == ("p0.cedar",)
    assert not decide(e, request(attested=False)).allowed


@pytest.mark.parametrize(
    ("condition", "forbidden", "allowed"),
    [
        ('context.environment == "prod"', request(), request(identity=identity(environment="dev"))),
        (
            'principal.environment == "prod" && principal.criticality == "critical"',
            request(identity=identity(criticality=Criticality.CRITICAL)),
            request(),
        ),
        (
            'context.claims has ref && context.claims.ref != "refs/heads/main"',
            request(claims={"repository": "acme/payments", "ref": "refs/heads/feature"}),
            request(),
        ),
        (
            'context has intent && context.intent like "*drop*"',
            request(intent="drop the orders table"),
            request(intent="deploy v2"),
        ),
        (
            "context.utc_hour < 6 || context.utc_weekday > 5",
            request(now=dt.datetime(2026, 6, 6, 12, tzinfo=dt.UTC)),  # a Saturday
            request(),
        ),
        (
            "principal has approval_expires && "
            "context.now > principal.approval_expires - 30 * 86400",
            request(now=dt.datetime(2027, 1, 15, tzinfo=dt.UTC)),
            request(),
        ),
        (
            'context has source_ip && !context.source_ip.isInRange(ip("10.0.0.0/8"))',
            request(source_ip="203.0.113.9"),
            request(source_ip="10.1.2.3"),
        ),
        (
            'principal.hasTag("team") && principal.getTag("team") == "payments" && '
            'context.scopes.contains("orders:list")',
            request(
                entitled_scopes=("orders:read", "orders:list"),
                requested_scopes=("orders:list",),
            ),
            request(),
        ),
        (
            "context.requested_ttl_seconds > 300 && resource.max_ttl_seconds <= 900",
            request(requested_ttl=dt.timedelta(minutes=10)),
            request(requested_ttl=dt.timedelta(minutes=5)),
        ),
        (
            'context has actor && context.actor like "*@contractor.example"',
            request(actor="eve@contractor.example"),
            request(actor="dana@example.com"),
        ),
        (
            'principal has approval && principal.approval.by != "dana@example.com"',
            request(
                identity=identity(
                    approval=dataclasses.replace(identity().approval, by="mallory@example.com")
                )
            ),  # type: ignore[arg-type]
            request(),
        ),
    ],
)
def test_a_user_forbid_denies_and_names_itself(
    condition: str, forbidden: PolicyRequest, allowed: PolicyRequest
) -> None:
    e = engine(
        "permit (principal, action, resource);",
        f'@reason("not like this")\nforbid (principal, action, resource) when {{ {condition} }};',
    )
    decision = decide(e, forbidden)
    assert not decision.allowed
    assert decision.policy_ids == ("p1.cedar",)
    assert decision.reasons == ("forbidden by p1.cedar: not like this",)
    assert decision.errors == ()
    assert decide(e, allowed).allowed


def test_a_forbid_scoped_to_one_action_or_profile() -> None:
    e = engine(
        'forbid (principal, action == Tether::Action::"renew", resource);',
        'forbid (principal, action, resource == Tether::Profile::"payments-db-ro");',
    )
    assert decide(e, request()).allowed
    assert decide(e, request(action="renew")).policy_ids == ("p0.cedar",)
    db = dataclasses.replace(PROFILE, id="payments-db-ro")
    assert decide(e, request(profile=db)).policy_ids == ("p1.cedar",)


def test_an_empty_raw_policy_set_denies() -> None:
    decision = decide(engine(include_default=False), request())
    assert not decision.allowed
    assert decision.reasons == ("the policy set is empty, so nothing is permitted",)


def test_a_raw_set_without_a_matching_permit_denies() -> None:
    e = engine(FORBID_X, include_default=False)
    decision = decide(e, request())
    assert not decision.allowed and decision.policy_ids == ()
    assert decision.reasons[0].startswith("no policy permits issue")


OVERFLOW = "context.requested_ttl_seconds * 4611686018427387904 > 0"


def test_an_evaluation_error_denies_even_when_a_permit_holds() -> None:
    # The erroring policy is a forbid: Cedar skips it and would allow. Tether must not.
    e = engine(f"forbid (principal, action, resource) when {{ {OVERFLOW} }};")
    decision = decide(e, request())
    assert not decision.allowed
    assert decision.policy_ids == ("p0.cedar",)
    assert len(decision.errors) == 1 and "integer overflow" in decision.errors[0]
    assert "p0.cedar" in decision.errors[0]
    assert decision.reasons[0].startswith("denied because a policy could not be evaluated")


def test_an_error_in_a_permit_denies_with_the_error() -> None:
    e = engine(
        f"permit (principal, action, resource) when {{ {OVERFLOW} }};", include_default=False
    )
    decision = decide(e, request())
    assert not decision.allowed and decision.errors


def test_an_error_on_known_attributes_is_kept_when_sliced() -> None:
    # This fails for every request of this identity: partial evaluation sees the error
    # and the slice must keep the original statement, not its `false` residual.
    e = engine(
        "forbid (principal, action, resource) when { principal has approval_expires && "
        "principal.approval_expires * 4611686018427387904 > 0 };"
    )
    decision = decide(e, request())
    assert not decision.allowed and "integer overflow" in decision.errors[0]


def test_a_forbid_and_an_error_both_reported() -> None:
    e = engine(
        "forbid (principal, action, resource);",
        f"forbid (principal, action, resource) when {{ {OVERFLOW} }};",
    )
    decision = decide(e, request())
    assert not decision.allowed
    assert decision.policy_ids == ("p0.cedar",)
    assert len(decision.errors) == 1


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"now": dt.datetime(2026, 6, 1, 12)}, "timezone-aware"),
        ({"claims": {"repository": 42}}, "claim repository must be a string"),
        ({"source_ip": "not-an-ip"}, "does not appear to be an IPv4 or IPv6 address"),
        ({"intent": b"bytes"}, "intent must be a string"),
        ({"requested_scopes": None}, "TypeError"),
    ],
)
def test_a_malformed_request_is_denied_not_raised(
    changes: dict[str, object], fragment: str
) -> None:
    decision = engine().evaluate(request(**changes))
    assert not decision.allowed
    assert decision.errors and fragment in decision.errors[0], decision.errors


def test_the_context_is_recorded_for_the_audit_entry() -> None:
    decision = decide(
        engine(),
        request(
            task_id="task-1",
            task_name="deploy",
            intent="ship",
            source_ip="10.0.0.1",
            actor="dana@example.com",
        ),
    )
    context = dict(decision.context)
    json.dumps(context)  # JSON-able as it is
    assert context["attested"] is True and context["entitled"] is True
    assert context["scopes"] == ["orders:read"] and context["entitled_scopes"] == ["orders:read"]
    assert context["requested_ttl_seconds"] == 600
    assert context["now"] == int(NOW.timestamp())
    assert context["claims"] == {"repository": "acme/payments", "ref": "refs/heads/main"}
    assert context["source_ip"] == "10.0.0.1" and context["task"] == "task-1"
    assert context["environment"] == "prod" and context["issuer"] == "github"


def test_claims_outside_the_selectors_are_not_visible_to_policy() -> None:
    decision = decide(engine(), request(claims={"repository": "a/b", "custom": "x"}))
    assert decision.context["claims"] == {"repository": "a/b"}


def test_a_fractional_ttl_is_rounded_up_for_policy() -> None:
    e = engine("forbid (principal, action, resource) when { context.requested_ttl_seconds > 60 };")
    assert not decide(e, request(requested_ttl=dt.timedelta(seconds=60.2))).allowed
    assert decide(e, request(requested_ttl=dt.timedelta(seconds=60))).allowed


def test_evaluate_many_matches_evaluate() -> None:
    e = engine(
        FORBID_X,
        'forbid (principal, action == Tether::Action::"exchange", resource);',
    )
    requests = [
        request(),
        request(intent="x"),
        request(intent="y"),
        request(action="exchange"),
        request(attested=False),
        request(requested_ttl=dt.timedelta(hours=2)),
        request(now=dt.datetime(2026, 1, 1)),
        request(identity=identity(status=IdentityStatus.RETIRED)),
    ] * 3
    assert e.evaluate_many(requests) == [e.evaluate(r) for r in requests]
    assert e.evaluate_many([]) == []


def test_ids_with_unusual_characters_still_decide() -> None:
    e = engine(
        'forbid (principal, action, resource) when { context has intent && context.intent == "x" };'
    )
    for odd in ('quote"d', "back\\slash", "new\nline", "ünïcødé", "tab\there"):
        r = request(identity=identity(id=odd), intent="y")
        assert decide(e, r).allowed, odd
        assert not decide(e, dataclasses.replace(r, intent="x")).allowed, odd
