"""Compiling policies: parse and schema validation, refusals naming the policy, statement ids."""

from __future__ import annotations

from pathlib import Path

import cedarpy
import pytest

import tether
from tether.errors import TetherError
from tether.model import Policy
from tether.policy import (
    ACTIONS,
    ALL_ACTIONS,
    CEDAR_SCHEMA,
    DEFAULT_POLICY_ID,
    KEY_ACTIONS,
    PolicyEngine,
    PolicyError,
    PolicyInvalid,
    schema_text,
    validate_policies,
)

REPO = Path(__file__).resolve().parents[2]


def problems(*sources: str) -> list[tuple[str, str]]:
    found = validate_policies([Policy(f"p{i}.cedar", s) for i, s in enumerate(sources)])
    return [(p.path, p.message) for p in found]


def test_the_schema_is_published_and_parses() -> None:
    namespace = CEDAR_SCHEMA["Tether"]
    assert set(namespace["entityTypes"]) == {"Identity", "Profile"}
    assert set(namespace["actions"]) == set(ALL_ACTIONS)
    assert set(ACTIONS) == {"issue", "renew", "exchange"}
    assert set(ALL_ACTIONS) - set(ACTIONS) == set(KEY_ACTIONS)
    identity = namespace["entityTypes"]["Identity"]["shape"]["attributes"]
    assert {"kind", "owner", "environment", "criticality", "status", "has_approval"} <= set(
        identity
    )
    assert identity["region"]["required"] is False
    context = namespace["commonTypes"]["Context"]["attributes"]
    assert context["source_ip"] == {"type": "Extension", "name": "ipaddr", "required": False}
    assert "entity Identity" in schema_text() and "tags __cedar::String" in schema_text()


def test_errors_derive_from_tether_error() -> None:
    assert issubclass(PolicyInvalid, PolicyError)
    assert issubclass(PolicyError, TetherError)


def test_valid_policies_have_no_problems() -> None:
    assert (
        problems(
            'forbid (principal, action, resource) when { context.environment == "prod" };',
            'permit (principal, action == Tether::Action::"renew", resource) '
            'when { principal has region && principal.region == "eu-west-1" };',
            "forbid (principal, action, resource) when { context has source_ip && "
            '!context.source_ip.isInRange(ip("10.0.0.0/8")) };',
            'forbid (principal, action, resource) when { principal.hasTag("team") && '
            'principal.getTag("team") == "legacy" };',
            "forbid (principal, action, resource) when { context.claims has repository && "
            'context.claims.repository like "forks/*" };',
            "forbid (principal, action, resource) when { principal has approval && "
            "principal.approval.expires < context.now + 86400 };",
            "// only a comment\n",
        )
        == []
    )


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("permit (principal, action, resource) when { principal.nope };", "`nope`"),
        ('permit (principal, action, resource) when { context.intnet == "x" };', "`intnet`"),
        (
            'permit (principal, action, resource) when { principal.region == "x" };',
            "optional attribute `region`",
        ),
        (
            'permit (principal, action, resource) when { context.requested_ttl_seconds > "1" };',
            "expected Long",
        ),
        ('permit (principal, action == Tether::Action::"delete", resource);', "delete"),
        ("permit (principal, action, resource) when { ", "cannot parse"),
        ("permit (a, b, c);", "cannot parse"),
        ('forbid (principal, action, resource) when { ip("nope") == ip("nope") };', "IP"),
    ],
)
def test_a_bad_policy_is_refused_naming_its_id(source: str, fragment: str) -> None:
    found = problems("permit (principal, action, resource);", source)
    assert found, "must be refused"
    for path, message in found:
        assert path == "policies[1]"
        assert message.startswith("p1.cedar"), message
    assert any(fragment in message for _, message in found), found


def test_one_mistake_is_reported_once_not_per_action() -> None:
    found = problems('permit (principal, action, resource) when { context.x == "y" };')
    assert len(found) == 1, found


def test_compile_raises_with_every_problem() -> None:
    with pytest.raises(PolicyInvalid) as caught:
        PolicyEngine.compile(
            [
                Policy("good.cedar", "permit (principal, action, resource);"),
                Policy("bad.cedar", "forbid (principal, action, resource) when { principal.x };"),
                Policy("worse.cedar", "forbid (principal"),
            ]
        )
    assert [p.path for p in caught.value.problems] == ["policies[1]", "policies[2]"]
    assert [p.policy_id for p in caught.value.problems] == ["bad.cedar", "worse.cedar"]
    assert "bad.cedar" in str(caught.value) and "worse.cedar" in str(caught.value)
    assert caught.value.status_code == 422


def test_statements_in_one_file_get_ids_from_the_file() -> None:
    e = PolicyEngine.compile(
        [
            Policy("one.cedar", "permit (principal, action, resource);"),
            Policy(
                "many.cedar",
                "forbid (principal, action, resource) when { context.attested };\n"
                '@id("no-renew") forbid (principal, action == Tether::Action::"renew", resource);\n'
                "permit (principal, action, resource);\n",
            ),
            Policy("named.cedar", '@id("solo") permit (principal, action, resource);'),
        ]
    )
    assert e.policy_ids == (
        DEFAULT_POLICY_ID,
        "one.cedar",
        "many.cedar#1",
        "many.cedar#no-renew",
        "many.cedar#3",
        "named.cedar#solo",
    )
    assert len(PolicyEngine.compile([], include_default=False)) == 0


@pytest.mark.parametrize(
    ("policies", "fragment"),
    [
        ([Policy("tether:default", "permit (principal, action, resource);")], "reserved"),
        ([Policy("guardrail:x", "permit (principal, action, resource);")], "reserved"),
        (
            [Policy("t.cedar", "permit (principal == ?principal, action, resource);")],
            "templates",
        ),
        (
            [
                Policy("a.cedar", "permit (principal, action, resource);"),
                Policy("a.cedar", "forbid (principal, action, resource);"),
            ],
            "used twice",
        ),
        (
            [
                Policy(
                    "d.cedar",
                    '@id("x") permit (principal, action, resource);\n'
                    '@id("x") forbid (principal, action, resource);',
                )
            ],
            "used twice",
        ),
    ],
)
def test_ids_that_would_be_ambiguous_are_refused(policies: list[Policy], fragment: str) -> None:
    found = validate_policies(policies)
    assert any(fragment in p.message for p in found), found


@pytest.mark.parametrize(
    "path",
    [
        REPO / "examples" / "policies" / "base.cedar",
        Path(tether.__file__).parent / "_demo" / "policies" / "base.cedar",
    ],
)
def test_shipped_policies_validate(path: Path) -> None:
    assert validate_policies([Policy(path.name, path.read_text(encoding="utf-8"))]) == []


def test_the_default_policy_is_valid_cedar_against_the_schema() -> None:
    from tether.policy import DEFAULT_POLICY_SOURCE
    from tether.policy._schema import schema_handle

    assert cedarpy.validate_policies(DEFAULT_POLICY_SOURCE, schema_handle()).validation_passed
