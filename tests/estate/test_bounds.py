"""One document, bounded work: validation stops after MAX_COUNTED problems and a refusal
lists the first MAX_REPORTED, however large the document and however much of it is bad.

No timings here (the bench measures time); memory is measured with tracemalloc, which
counts what parsing allocates, not the document built before it.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from tests.factories import estate_document
from tether.estate import (
    MAX_COUNTED,
    MAX_REPORTED,
    EstateInvalid,
    Problem,
    load_estate_text,
    parse_estate,
)
from tether.estate.errors import MAX_PROBLEM_CHARS

MILLION = 1_000_000
#: What parsing a refused document may allocate, whatever its size: less than the
#: million-item list itself (8 MB of references). It was gigabytes.
PARSE_MEMORY_LIMIT = 8 * 1024 * 1024


def refused(document: Any) -> EstateInvalid:
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(document)
    return caught.value


def refused_within_memory(document: Any) -> EstateInvalid:
    refused(estate_document(1) | {"x": 1})  # warm caches: they are not per request
    tracemalloc.start()
    try:
        refusal = refused(document)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PARSE_MEMORY_LIMIT, f"parsing allocated {peak} bytes"
    return refusal


def assert_bounded(refusal: EstateInvalid) -> None:
    assert 0 < len(refusal.problems) <= MAX_REPORTED
    assert refusal.count == MAX_COUNTED
    assert refusal.truncated is True
    assert str(refusal) == (
        f"the estate is invalid: {MAX_COUNTED} or more problems; "
        f"the first {MAX_REPORTED} are listed"
    )
    assert len(set(refusal.problems)) == len(refusal.problems)


# -- a million bad items --


def test_a_million_bad_identities_give_the_first_hundred_problems_and_a_count() -> None:
    refusal = refused_within_memory({"version": 1, "identities": [1] * MILLION})
    assert_bounded(refusal)
    assert refusal.problems[0] == Problem("identities", "has more than 100000 items")
    assert refusal.problems[1:] == [
        Problem(f"identities[{i}]", "must be of type object") for i in range(MAX_REPORTED - 1)
    ]


def test_a_million_empty_identities() -> None:
    refusal = refused_within_memory({"version": 1, "identities": [{} for _ in range(MILLION)]})
    assert_bounded(refusal)
    assert refusal.problems[0] == Problem("identities", "has more than 100000 items")
    assert refusal.problems[1] == Problem("identities[0].id", "is required")


def test_the_size_of_a_section_is_named_first_whatever_comes_before_it() -> None:
    document = {
        "version": 1,
        "owners": [{"id": "-"} for _ in range(5000)],  # 10,000 problems of their own
        "identities": [1] * MILLION,
    }
    refusal = refused_within_memory(document)
    assert_bounded(refusal)
    assert refusal.problems[0] == Problem("identities", "has more than 100000 items")


def test_a_million_unknown_top_level_fields() -> None:
    document: dict[str, Any] = {"version": 1}
    document.update((f"field-{i}", i) for i in range(MILLION))
    refusal = refused_within_memory(document)
    assert_bounded(refusal)
    assert {p.message for p in refusal.problems} == {"is not a known field"}


def test_a_million_bad_scopes_inside_a_one_of_entitlement() -> None:
    document = estate_document(1)
    document["identities"][0]["entitlements"] = [{"profile": "api-read", "scopes": ["/"] * MILLION}]
    refusal = refused_within_memory(document)
    assert refusal.truncated is True
    assert len(refusal.problems) == MAX_REPORTED
    assert refusal.count <= MAX_COUNTED
    assert refusal.problems[0] == Problem(
        "identities[0].entitlements[0].scopes", "has more than 200 items"
    )
    assert refusal.problems[1].path == "identities[0].entitlements[0].scopes[0]"


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        (
            "valid identities, too many of them",
            lambda d: d.update(identities=d["identities"] * 200_000),
            Problem("identities", "has more than 100000 items"),
        ),
        (
            "valid entitlements, too many of them",
            lambda d: d["identities"][0].update(entitlements=["api-read"] * MILLION),
            Problem("identities[0].entitlements", "has more than 500 items"),
        ),
        (
            "valid labels, too many of them",
            lambda d: d["identities"][0].update(labels={f"k{i}": "v" for i in range(MILLION)}),
            Problem("identities[0].labels", "has more than 64 entries"),
        ),
    ],
    ids=["identities", "entitlements", "labels"],
)
def test_a_list_over_its_limit_is_refused_without_checking_every_item(
    name: str, build: Callable[[dict[str, Any]], None], expected: Problem
) -> None:
    document = estate_document(1)
    build(document)
    refusal = refused_within_memory(document)
    assert refusal.problems == [expected]
    assert refusal.count == 1
    assert refusal.truncated is True  # what is past the limit was not looked at
    assert str(refusal) == f"the estate is invalid: {expected}"


def test_semantic_checks_stop_too() -> None:
    document = estate_document(1500)
    for identity in document["identities"]:
        identity["owner"] = "nobody"
    refusal = refused(document)
    assert_bounded(refusal)
    assert refusal.problems[0] == Problem("identities[0].owner", "unknown owner 'nobody'")


def test_a_huge_key_makes_a_short_problem() -> None:
    refusal = refused({"version": 1, "k" * MILLION: 1})
    [problem] = refusal.problems
    assert len(problem.path) == MAX_PROBLEM_CHARS and problem.path.startswith("kkk")
    assert problem.message == "is not a known field"
    assert len(str(refusal)) < 2 * MAX_PROBLEM_CHARS


def test_a_huge_string_is_refused_for_its_length_without_matching_its_pattern() -> None:
    document = estate_document(1)
    document["identities"][0]["id"] = "a/" * MILLION
    assert refused_within_memory(document).problems == [
        Problem("identities[0].id", "is longer than 128 characters")
    ]


# -- small refusals are as they were --


def test_a_few_problems_are_all_listed_and_counted() -> None:
    document = estate_document(8)
    for index in range(7):
        document["identities"][index]["password"] = "x"
    refusal = refused(document)
    assert refusal.count == len(refusal.problems) == 7
    assert refusal.truncated is False
    assert str(refusal) == (
        "the estate is invalid: identities[0].password: is not a known field; "
        "identities[1].password: is not a known field; "
        "identities[2].password: is not a known field; "
        "identities[3].password: is not a known field; "
        "identities[4].password: is not a known field (and 2 more)"
    )


def test_between_the_listed_and_the_counted_the_count_is_exact() -> None:
    document: dict[str, Any] = {"version": 1}
    document.update((f"field-{i:03d}", i) for i in range(250))
    refusal = refused(document)
    assert len(refusal.problems) == MAX_REPORTED
    assert refusal.count == 250
    assert refusal.truncated is False
    assert refusal.problems[0] == Problem("field-000", "is not a known field")
    assert str(refusal) == (
        f"the estate is invalid: 250 problems; the first {MAX_REPORTED} are listed"
    )


def test_the_problems_are_in_path_order() -> None:
    document = estate_document(12)
    for index in (11, 2, 10):
        del document["identities"][index]["purpose"]
    document["owners"][1]["phone"] = "x"
    assert [p.path for p in refused(document).problems] == [
        "identities[2].purpose",
        "identities[10].purpose",
        "identities[11].purpose",
        "owners[1].phone",
    ]


def test_a_refusal_made_elsewhere_is_bounded_too() -> None:
    problems = [Problem(f"p[{i}]", "bad") for i in range(5000)]
    refusal = EstateInvalid(problems)
    assert len(refusal.problems) == MAX_REPORTED
    assert refusal.count == MAX_COUNTED
    assert refusal.truncated is True
    assert EstateInvalid(problems[:3]).count == 3


# -- the YAML reader --


def test_a_yaml_file_of_many_bad_values_is_refused_with_a_bounded_list() -> None:
    text = "version: 1\nx: [" + ", ".join(["!!set {a: null}"] * (5 * MAX_COUNTED)) + "]\n"
    with pytest.raises(EstateInvalid) as caught:
        load_estate_text(text)
    refusal = caught.value
    assert len(refusal.problems) == MAX_REPORTED
    assert refusal.count == MAX_COUNTED and refusal.truncated is True
    assert refusal.problems[0] == Problem("x[0]", "a YAML set is not allowed here")


def test_a_deeply_nested_yaml_value_keeps_its_path() -> None:
    text = "version: 1\nx: " + "[" * 100 + "!!set {a: null}" + "]" * 100 + "\n"
    with pytest.raises(EstateInvalid) as caught:
        load_estate_text(text)
    [problem] = caught.value.problems
    assert problem.path == "x" + "[0]" * 100
