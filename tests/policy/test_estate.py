"""`apply` refuses an estate whose policies do not parse or validate, naming the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tests.factories import estate_document
from tether.estate import EstateInvalid, load_estate_file, parse_estate
from tether.policy import PolicyEngine

DEMO = Path(tether.__file__).parent / "_demo" / "estate.yaml"


def refusal(policies: list[object]) -> list[tuple[str, str]]:
    document = estate_document(4)
    document["policies"] = policies
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(document)
    return [(p.path, p.message) for p in caught.value.problems]


def test_an_invalid_inline_policy_is_refused_at_its_index() -> None:
    problems = refusal(
        [{"id": "policies/base.cedar", "source": "permit (principal, action, resource) when { "}]
    )
    assert problems == [
        ("policies[0]", "policies/base.cedar: cannot parse: unexpected end of input")
    ]


def test_a_policy_outside_the_schema_is_refused_with_its_id() -> None:
    problems = refusal(
        [
            {"id": "ok.cedar", "source": "forbid (principal, action, resource);"},
            {
                "id": "typo.cedar",
                "source": "forbid (principal, action, resource) "
                'when { principal.enviroment == "prod" };',
            },
        ]
    )
    assert len(problems) == 1
    path, message = problems[0]
    assert path == "policies[1]" and message.startswith("typo.cedar: ") and "enviroment" in message


def test_the_index_is_the_position_in_the_file() -> None:
    # An unresolved path is a problem of its own; the bad policy keeps its own index.
    problems = refusal(["policies/missing.cedar", {"id": "bad.cedar", "source": "nope"}])
    assert [path for path, _ in problems] == ["policies[0]", "policies[1]"]
    assert problems[1][1].startswith("bad.cedar: cannot parse")


def test_valid_policies_apply_and_compile() -> None:
    document = estate_document(4)
    document["policies"] = [
        {
            "id": "base.cedar",
            "source": 'forbid (principal, action, resource) when { context.environment == "x" };',
        }
    ]
    estate = parse_estate(document)
    assert PolicyEngine.compile(estate.policies).policy_ids == ("tether:default", "base.cedar")


def test_the_demo_estate_and_its_policy_still_apply() -> None:
    estate = parse_estate(load_estate_file(DEMO))
    assert PolicyEngine.compile(estate.policies).policy_ids == (
        "tether:default",
        "policies/base.cedar",
    )
