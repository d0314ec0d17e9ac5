"""Policy test suites: the file format, its defaults, and errors that name the field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.factories import estate_document
from tether.estate import parse_estate
from tether.model import Estate, Policy
from tether.policy import PolicyTestInvalid, load_suite, run_suite

NOW = "2026-06-01T12:00:00Z"


def suite(*cases: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"defaults": {"now": NOW}, "cases": list(cases), **extra}


@pytest.fixture(scope="module")
def estate() -> Estate:
    return parse_estate(estate_document(8))


def test_an_inline_request_has_ordinary_defaults() -> None:
    loaded = load_suite(suite({"request": {}, "expect": "allow"}))
    (case,) = loaded.cases
    r = case.request
    assert case.name == "case 1"
    assert r.action == "issue" and r.attested
    assert r.identity.kind.value == "workload" and r.profile.id == "test-profile"
    assert r.entitled_scopes == r.profile.scopes == r.requested_scopes
    assert r.requested_ttl == dt.timedelta(hours=1) == r.kind_max_ttl
    assert r.attestation_required  # workloads must attest
    assert r.now == dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    assert loaded.default_policy and loaded.policies == ()
    [result] = run_suite(loaded.cases, [])
    assert result.passed and result.got == "allow"


def test_estate_ids_resolve_and_inline_objects_vary_them(estate: Estate) -> None:
    loaded = load_suite(
        suite(
            {"request": {"identity": "nhi-00002", "profile": "api-read"}, "expect": "allow"},
            {
                "request": {
                    "identity": {"id": "nhi-00002", "status": "retired"},
                    "profile": "api-read",
                },
                "expect": "deny",
                "reasons": ["guardrail:identity-inactive"],
            },
            {
                "request": {"identity": "nhi-00001", "profile": "db-ro"},
                "expect": "deny",
                "reasons": ["guardrail:not-entitled"],
            },
            {
                "name": "vendor from the estate",
                "request": {"identity": "nhi-00001", "profile": "api-read", "attested": False},
                "expect": "deny",
            },
        ),
        estate,
    )
    first, retired, not_entitled, vendor = loaded.cases
    assert first.request.entitled_scopes == ("read",) == first.request.requested_scopes
    assert first.request.requested_ttl == dt.timedelta(minutes=15)  # profile cap < kind cap
    assert retired.request.identity.status.value == "retired"
    assert retired.request.identity.environment == first.request.identity.environment
    assert not_entitled.request.entitled_scopes is None
    assert vendor.request.vendor is not None and vendor.request.vendor.id == "vendor-x"
    results = run_suite(loaded.cases, [])
    assert [r.passed for r in results] == [True, True, True, True]


def test_expected_reasons_match_statement_ids_by_file() -> None:
    policy = Policy(
        "rules.cedar",
        "forbid (principal, action, resource) when { context has intent };\n"
        "permit (principal, action, resource);\n",
    )
    loaded = load_suite(
        suite(
            {"request": {"intent": "x"}, "expect": "deny", "reasons": ["rules.cedar"]},
            {"request": {"intent": "x"}, "expect": "deny", "reasons": ["rules.cedar#1"]},
            {"request": {"intent": "x"}, "expect": "deny", "reasons": ["rules.cedar#2"]},
            {"request": {}, "expect": "deny"},
        )
    )
    results = run_suite(loaded.cases, [policy], default_policy=False)
    assert [r.passed for r in results] == [True, True, False, False]
    assert results[2].missing == ("rules.cedar#2",)
    assert results[3].got == "allow"
    assert results[2].to_dict()["missing_reasons"] == ["rules.cedar#2"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "(file): must be an object"),
        ({"cases": []}, "cases: must be a non-empty list"),
        ({"cases": [{"expect": "allow"}], "extra": 1}, "(file).extra: is not a known field"),
        (suite({"expect": "maybe"}), "cases[0].expect: must be allow or deny"),
        (
            suite({"expect": "deny"}, {"request": {"ttl": "ages"}, "expect": "deny"}),
            "cases[1].request.ttl: expected a duration",
        ),
        (suite({"request": {"now": "yesterday"}, "expect": "deny"}), "cases[0].request.now:"),
        (suite({"request": {"identity": "ghost"}, "expect": "deny"}), "unknown identity 'ghost'"),
        (
            suite({"request": {"identity": {"kind": "robot"}}, "expect": "deny"}),
            "cases[0].request.identity: not a valid identity",
        ),
        (suite({"request": {"scopes": "read"}, "expect": "deny"}), "cases[0].request.scopes:"),
        (
            suite({"request": {"claims": {"sub": 7}}, "expect": "deny"}),
            "cases[0].request.claims.sub: must be a string",
        ),
        (suite({"request": {"attested": "yes"}, "expect": "deny"}), "request.attested"),
        (suite({"request": {"colour": "red"}, "expect": "deny"}), "request.colour: is not a"),
        (suite({"request": [], "expect": "deny"}), "cases[0].request: must be an object"),
        (suite({"expect": "deny", "reasons": "x"}), "cases[0].reasons: must be a list"),
        ({"default_policy": "no", "cases": [{"expect": "deny"}]}, "default_policy:"),
    ],
)
def test_a_bad_suite_names_the_case_and_field(document: Any, message: str) -> None:
    with pytest.raises(PolicyTestInvalid) as caught:
        load_suite(document)
    assert message in str(caught.value)
