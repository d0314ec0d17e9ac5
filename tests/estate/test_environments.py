"""Environments are a closed set: declared in the estate (or the default list), and a name
outside it (a typo such as `prdo`) is refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.estate.test_parse import base, problems_of
from tether.estate import parse_estate
from tether.model import DEFAULT_ENVIRONMENTS


def test_without_a_declaration_the_default_environments_apply() -> None:
    assert DEFAULT_ENVIRONMENTS == ("dev", "test", "staging", "prod")
    assert parse_estate(base()).environments == DEFAULT_ENVIRONMENTS


def test_a_typo_in_an_identitys_environment_is_refused_naming_the_field() -> None:
    doc = base()
    doc["identities"][2]["environment"] = "prdo"
    assert problems_of(doc) == [
        (
            "identities[2].environment",
            "'prdo' is not a declared environment (dev, test, staging, prod)",
        )
    ]


def test_declared_environments_replace_the_default() -> None:
    doc = base()
    doc["environments"] = ["dev", "staging", "prod", "eu-sandbox"]
    doc["identities"][0]["environment"] = "eu-sandbox"
    assert parse_estate(doc).environments == ("dev", "staging", "prod", "eu-sandbox")

    doc["environments"] = ["staging", "prod"]  # identity 2 (and 5) are dev
    problems = problems_of(doc)
    assert (
        "identities[0].environment",
        "'eu-sandbox' is not a declared environment (staging, prod)",
    ) in problems
    assert (
        "identities[2].environment",
        "'dev' is not a declared environment (staging, prod)",
    ) in problems


def test_a_kinds_allowed_environments_must_be_declared() -> None:
    doc = base()
    doc["kinds"]["service_account"] = {"allowed_environments": ["prod", "stagign"]}
    assert problems_of(doc) == [
        (
            "kinds.service_account.allowed_environments[1]",
            "'stagign' is not a declared environment (dev, test, staging, prod)",
        )
    ]


@pytest.mark.parametrize(
    ("environments", "expected"),
    [
        ([], ("environments", "needs at least 1 item(s)")),
        (["prod", "dev", "prod"], ("environments[2]", "'prod' is declared twice")),
        (["prod", "no spaces"], ("environments[1]", None)),
    ],
)
def test_the_declaration_itself_is_checked(
    environments: list[Any], expected: tuple[str, Any]
) -> None:
    doc = base()
    doc["environments"] = environments
    found = problems_of(doc)
    path, message = expected
    assert path in [p for p, _ in found], found
    if message is not None:
        assert (path, message) in found
