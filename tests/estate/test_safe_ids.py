"""Every id in an estate has one safe shape, so every id `apply` accepts has a URL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import jsonschema
import pytest
from pydantic import Field, TypeAdapter, ValidationError

from tests.estate.test_parse import Mutation, set_
from tests.factories import estate_document
from tether.estate import (
    SAFE_ID_MAX_LENGTH,
    SAFE_ID_PATTERN,
    SAFE_ID_RULE,
    EstateInvalid,
    estate_schema,
    is_safe_id,
    parse_estate,
)

SAFE = [
    "a",
    "7",
    "svc:a@b.c-d_e",
    "payments-deployer",
    "team.payments",
    "a.b.c",
    "a.",
    "a_",
    "a-",
    "A-Z_0.9:x@y",
    "spiffe:example.org:ns:prod",
    "x" * SAFE_ID_MAX_LENGTH,
]
UNSAFE = [
    "",
    "a/b",
    "/a",
    "a/",
    "..",
    "a..b",
    "a..",
    "a...b",
    "../etc",
    ".a",
    ".",
    "-a",
    "_a",
    ":a",
    "@a",
    "a b",
    " a",
    "a ",
    "a\tb",
    "a\n",
    "a\x00",
    "a%2Fb",
    "a?b",
    "a#b",
    "a\\b",
    "a*b",
    "a,b",
    "a+b",
    "caf\u00e9",
    "team\u200f-a",
    "\uff41",  # fullwidth a
    "nhi-\U0001f680",
    "x" * (SAFE_ID_MAX_LENGTH + 1),
]


@pytest.mark.parametrize("value", SAFE)
def test_safe_ids(value: str) -> None:
    assert is_safe_id(value)


@pytest.mark.parametrize("value", UNSAFE)
def test_unsafe_ids(value: str) -> None:
    assert not is_safe_id(value)


@pytest.mark.parametrize("value", [None, 1, b"a", ["a"]])
def test_only_strings_are_ids(value: Any) -> None:
    assert not is_safe_id(value)


@pytest.mark.parametrize("value", SAFE + UNSAFE)
def test_the_pattern_works_in_pydantic_as_it_does_here(value: str) -> None:
    # The API reuses the pattern for path parameters; pydantic's default (Rust) regex
    # engine has no look-around, so the pattern must not need it.
    adapter = TypeAdapter(
        Annotated[str, Field(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH)]
    )
    try:
        adapter.validate_python(value)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted is is_safe_id(value)


# -- the published schema --


def _string_schemas(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "string":
            yield where, node
        for key, value in node.items():
            yield from _string_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_schemas(value, f"{where}/{index}")


ID_FIELDS = {
    "/properties/owners/items/properties/id",
    "/properties/vendors/items/properties/id",
    "/properties/issuers/items/properties/id",
    "/properties/profiles/items/properties/id",
    "/properties/profiles/items/properties/target",
    "/properties/identities/items/properties/id",
    "/properties/identities/items/properties/owner",
    "/properties/identities/items/properties/vendor",
    "/properties/identities/items/properties/attest/properties/issuer",
    "/properties/identities/items/properties/entitlements/items/oneOf/0",
    "/properties/identities/items/properties/entitlements/items/oneOf/1/properties/profile",
    "/properties/governance/properties/sinks/items/properties/id",
    "/properties/exceptions/items/properties/id",
    "/properties/people/items/properties/id",
    "/properties/people/items/properties/issuer",
    "/properties/people/items/properties/may_act/items",
    "/properties/identities/items/properties/may_act/items",
    "/properties/identities/items/properties/intent_schema/properties/tools/items",
}


def test_every_id_and_reference_in_the_schema_has_the_one_pattern() -> None:
    strings = dict(_string_schemas(estate_schema()))
    with_pattern = {w for w, s in strings.items() if s.get("pattern") == SAFE_ID_PATTERN}
    assert with_pattern == ID_FIELDS
    for where in ID_FIELDS:
        assert strings[where]["maxLength"] == SAFE_ID_MAX_LENGTH, where
        assert SAFE_ID_RULE in strings[where]["description"], where


def test_no_other_identifier_in_the_schema_may_hold_a_slash_or_dot_dot_but_scopes_and_keys() -> (
    None
):
    # Scopes (`orders:read`, `repo/*`) and label keys (`cost-center/x`) are not ids: they
    # are never a URL path segment. Policy ids are file paths. URLs are URLs.
    for where, schema in _string_schemas(estate_schema()):
        pattern = schema.get("pattern")
        if pattern is None or pattern == SAFE_ID_PATTERN or "[^" in pattern:
            continue
        if where.endswith(("/scopes/items", "/propertyNames")) or "https?" in pattern:
            continue
        assert not re.search(pattern, "a/b"), where


def test_the_published_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(estate_schema())
    validator = jsonschema.Draft202012Validator(estate_schema())
    assert validator.is_valid(estate_document(8))
    bad = estate_document(8)
    bad["identities"][0]["id"] = "a..b"
    assert not validator.is_valid(bad)


# -- refused at apply, with the path of the field --


def _refusal(mutation: Mutation) -> list[tuple[str, str]]:
    document = estate_document(8)
    mutation(document)
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(document)
    return [(p.path, p.message) for p in caught.value.problems]


PLACES: list[tuple[tuple[Any, ...], str]] = [
    (("identities", 3, "id"), "identities[3].id"),
    (("owners", 0, "id"), "owners[0].id"),
    (("vendors", 0, "id"), "vendors[0].id"),
    (("issuers", 0, "id"), "issuers[0].id"),
    (("profiles", 0, "id"), "profiles[0].id"),
    (("profiles", 1, "target"), "profiles[1].target"),
    (("identities", 3, "owner"), "identities[3].owner"),
    (("identities", 1, "vendor"), "identities[1].vendor"),
    (("identities", 2, "attest", "issuer"), "identities[2].attest.issuer"),
    (("identities", 0, "entitlements", 0, "profile"), "identities[0].entitlements[0].profile"),
    (("identities", 0, "entitlements", 0), "identities[0].entitlements[0]"),
]
REFUSED = ["a/b", "..", "a..b", "-leading", "with space", "caf\u00e9", "a\n", ""]


@pytest.mark.parametrize(("place", "path"), PLACES, ids=[p for _, p in PLACES])
@pytest.mark.parametrize("value", REFUSED)
def test_an_unsafe_id_is_refused_naming_its_field_and_the_rule(
    place: tuple[Any, ...], path: str, value: str
) -> None:
    assert _refusal(set_(place, value)) == [(path, f"is not a valid id: use {SAFE_ID_RULE}")]


def test_an_id_too_long_is_refused_naming_its_field() -> None:
    too_long = "n" * (SAFE_ID_MAX_LENGTH + 1)
    assert _refusal(set_(("identities", 5, "id"), too_long)) == [
        ("identities[5].id", f"is longer than {SAFE_ID_MAX_LENGTH} characters")
    ]


def test_ids_using_every_allowed_character_are_accepted() -> None:
    document = estate_document(8)
    document["owners"][0]["id"] = "team:a@example.com"
    for identity in document["identities"]:
        if identity["owner"] == "team-a":
            identity["owner"] = "team:a@example.com"
    document["vendors"][0]["id"] = "vendor_x.v2"
    document["identities"][1]["vendor"] = "vendor_x.v2"
    document["issuers"][0]["id"] = "ci:github@acme"
    for index in (2, 5):
        document["identities"][index]["attest"]["issuer"] = "ci:github@acme"
    document["profiles"][0]["id"] = "api-read:v1.0"
    for identity in document["identities"]:
        identity["entitlements"] = ["api-read:v1.0"]
    document["profiles"][1]["target"] = "db.main_1"
    document["identities"][0]["id"] = "svc:a@b.c-d_e"
    document["identities"][7]["id"] = "x" * SAFE_ID_MAX_LENGTH

    estate = parse_estate(document)
    assert estate.identities[0].id == "svc:a@b.c-d_e"
    assert estate.identities[0].owner_id == "team:a@example.com"
    assert estate.identities[1].vendor_id == "vendor_x.v2"
    assert estate.profiles[1].target == "db.main_1"
    assert [e.profile_id for e in estate.identities[3].entitlements] == ["api-read:v1.0"]
    assert all(is_safe_id(i.id) for i in estate.identities)
