"""Registration rules: evidence → the one active identity whose rule it satisfies."""

from __future__ import annotations

import datetime as dt
from types import MappingProxyType
from typing import Any

import pytest

from tether.attest import AmbiguousIdentity, Evidence, NoMatchingIdentity, match_identity
from tether.model import Identity

NOW = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)
SELECTORS = {
    "repository": "acme/payments",
    "repository_owner": "acme",
    "ref": "refs/heads/main",
    "environment": "prod",
    "run_attempt": "1",
    "sha": "0a1b2c",
    "ephemeral": "true",
}


def evidence(issuer_id: str = "github", **selectors: str) -> Evidence:
    merged = {**SELECTORS, **selectors}
    return Evidence(
        issuer_id=issuer_id,
        issuer="https://token.actions.githubusercontent.com",
        subject="repo:acme/payments:environment:prod",
        claims=MappingProxyType(dict(merged)),
        selectors=MappingProxyType(merged),
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(minutes=5),
        jti="j",
    )


def identity(id: str, claims: Any, *, issuer: str = "github", status: str = "active") -> Identity:
    return Identity.from_spec(
        {
            "id": id,
            "kind": "workload",
            "owner": "team-payments",
            "purpose": "test",
            "justification": "T-1",
            "environment": "prod",
            "status": status,
            "attest": {"issuer": issuer, "claims": claims},
        }
    )


def test_an_exact_rule_matches() -> None:
    deployer = identity("deployer", {"repository": "acme/payments", "ref": "refs/heads/main"})
    other = identity("other", {"repository": "acme/orders"})
    assert match_identity(evidence(), [other, deployer]) is deployer


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ({"repository": "acme/*"}, True),
        ({"repository": "acme/pay*"}, True),
        ({"repository": "*"}, True),
        ({"repository": "acme/payment?"}, True),
        ({"repository": "acme/[op]ayments"}, True),
        ({"repository": "acme/[!p]ayments"}, False),
        ({"repository": "ACME/*"}, False),  # case-sensitive
        ({"repository": "acme/Payments"}, False),
        ({"repository": "acme"}, False),  # exact means whole value
        ({"repository": "acme/payments "}, False),
        ({"ref": "refs/heads/*"}, True),
        ({"ref": "refs/tags/*"}, False),
        ({"environment": "prod", "ref": "refs/heads/m*"}, True),
        ({"environment": "prod", "ref": "refs/heads/release"}, False),  # every claim must hold
        ({"run_attempt": 1}, True),  # non-strings compare as str
        ({"run_attempt": 2}, False),
        ({"run_attempt": 1.0}, False),  # "1.0" is not "1"
        ({"ephemeral": True}, True),
        ({"ephemeral": "true"}, True),
        ({"ephemeral": False}, False),
        ({"missing": "*"}, False),  # a glob still needs the selector to exist
        ({"missing": "x"}, False),
        ({"repository": None}, False),
        ({"repository": ["acme/payments"]}, False),
    ],
)
def test_rule_claims(rule: dict[str, Any], matches: bool) -> None:
    candidate = identity("x", rule)
    if matches:
        assert match_identity(evidence(), [candidate]) is candidate
    else:
        with pytest.raises(NoMatchingIdentity):
            match_identity(evidence(), [candidate])


def test_a_rule_for_another_issuer_does_not_match() -> None:
    with pytest.raises(NoMatchingIdentity, match="issuer github"):
        match_identity(evidence(), [identity("k8s", {"repository": "acme/payments"}, issuer="k8s")])


def test_an_identity_without_a_rule_never_matches() -> None:
    bare = Identity.from_spec(
        {
            "id": "bare",
            "kind": "api_key",
            "owner": "o",
            "purpose": "p",
            "justification": "j",
            "environment": "prod",
        }
    )
    with pytest.raises(NoMatchingIdentity):
        match_identity(evidence(), [bare])


def test_a_rule_with_no_claims_never_matches() -> None:
    # It would accept every token the issuer signs for our audience.
    with pytest.raises(NoMatchingIdentity):
        match_identity(evidence(), [identity("anything", {})])


def test_no_identities_means_no_match() -> None:
    with pytest.raises(NoMatchingIdentity) as info:
        match_identity(evidence(), [])
    assert info.value.status_code == 401
    assert info.value.code == "no_matching_identity"


def test_two_matching_identities_are_ambiguous() -> None:
    broad = identity("broad", {"repository": "acme/*"})
    narrow = identity("narrow", {"repository": "acme/payments"})
    unrelated = identity("unrelated", {"repository": "acme/orders"})
    with pytest.raises(AmbiguousIdentity, match="more than one identity: broad, narrow") as info:
        match_identity(evidence(), [narrow, unrelated, broad])
    assert info.value.code == "ambiguous_identity"


@pytest.mark.parametrize("status", ["retired", "suspended"])
def test_only_active_identities_are_candidates(status: str) -> None:
    old = identity("old", {"repository": "acme/payments"}, status=status)
    with pytest.raises(NoMatchingIdentity):
        match_identity(evidence(), [old])
    current = identity("current", {"repository": "acme/*"})
    # The inactive one does not make the active one ambiguous.
    assert match_identity(evidence(), [old, current]) is current


def test_identities_may_be_any_iterable() -> None:
    deployer = identity("deployer", {"repository": "acme/payments"})
    assert match_identity(evidence(), iter([deployer])) is deployer
