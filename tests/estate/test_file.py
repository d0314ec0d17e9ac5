"""Reading an estate file from disk: safe YAML, clear errors, policy files inlined."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document, write_estate
from tether.estate import EstateInvalid, load_estate_file, load_estate_text, parse_estate
from tether.estate._file import MAX_FILE_BYTES


def refusal(text: str) -> list[tuple[str, str]]:
    with pytest.raises(EstateInvalid) as caught:
        load_estate_text(text)
    return [(p.path, p.message) for p in caught.value.problems]


def test_a_written_estate_reads_back_as_the_same_document(tmp_path: Path) -> None:
    document = estate_document(8)
    path = write_estate(tmp_path / "estate.yaml", document)
    assert load_estate_file(path) == document
    parse_estate(load_estate_file(path))


# -- aliases and anchors --

ALIAS_BOMB = """\
version: 1
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_an_alias_bomb_is_refused() -> None:
    problems = refusal(ALIAS_BOMB)
    assert len(problems) == 1
    where, message = problems[0]
    assert where == "line 3, column 8"  # the first `*a`
    assert "aliases" in message


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nowners:\n  - &o {id: team-a, contact: a@example.com}\n  - *o\n",
        "version: 1\nbase: &base {kind: workload}\nidentities:\n  - <<: *base\n    id: x\n",
        "version: 1\nkinds:\n  api_key: &k {max_ttl: 1h}\n  token: *k\n",
    ],
)
def test_any_alias_is_refused(text: str) -> None:
    [(where, message)] = refusal(text)
    assert re.fullmatch(r"line \d+, column \d+", where)
    assert "aliases are not allowed" in message


def test_an_estate_file_with_an_alias_is_refused_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "estate.yaml"
    path.write_text(ALIAS_BOMB)
    with pytest.raises(EstateInvalid, match="aliases"):
        load_estate_file(path)


# -- invalid YAML --


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("version: 1\nowners: [\n  {id: a\n", 4, 1),
        ("version: 1\nowners:\n  - id: a\n   contact: b\n", 4, 4),
        ("version: 1\n\tidentities: []\n", 2, 1),
        ('version: 1\nowners: "unterminated\n', 3, 1),
        ("version: 1\nversion: [1, 2\nowners: []\n", 3, 7),
    ],
)
def test_invalid_yaml_names_line_and_column(text: str, line: int, column: int) -> None:
    [(where, message)] = refusal(text)
    assert where == f"line {line}, column {column}"
    assert message


def test_invalid_yaml_from_disk_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "estate.yaml"
    path.write_text("version: 1\nowners:\n  - id: team-a\n    contact: [oops\n")
    with pytest.raises(EstateInvalid) as caught:
        load_estate_file(path)
    [problem] = caught.value.problems
    assert re.fullmatch(r"line 5, column \d+", problem.path)


def test_python_tags_are_not_constructed() -> None:
    [(where, message)] = refusal("version: !!python/object/apply:os.getpid []\n")
    assert where == "line 1, column 10"
    assert "constructor" in message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("version: 1\nowners: [{id: !!binary dGVhbQ==, contact: a}]\n", "owners[0].id"),
        ("version: 1\nprofiles: [{id: p, grants: !!set {a, b}}]\n", "profiles[0].grants"),
    ],
)
def test_yaml_values_json_cannot_carry_are_refused_with_their_path(text: str, path: str) -> None:
    [(where, message)] = refusal(text)
    assert where == path
    assert "not allowed" in message


def test_deeply_nested_yaml_is_refused_not_a_crash() -> None:
    deep = "version: 1\nprofiles: " + "[" * 20_000 + "]" * 20_000 + "\n"
    [(_, message)] = refusal(deep)
    assert "nested too deeply" in message


def test_an_integer_too_long_to_convert_is_refused_not_a_crash() -> None:
    [(_, message)] = refusal("version: " + "9" * 5000 + "\n")
    assert "not a valid value" in message


def test_an_empty_file_is_an_empty_document_that_validation_refuses() -> None:
    assert load_estate_text("") is None
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(load_estate_text(""))
    assert [p.path for p in caught.value.problems] == ["(document)"]


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "estate.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is actually written
    with pytest.raises(EstateInvalid) as caught:
        load_estate_file(path)
    [problem] = caught.value.problems
    assert problem.path == str(path)
    assert str(MAX_FILE_BYTES) in problem.message


# -- dates and times in YAML --


def test_yaml_dates_become_strings() -> None:
    document = load_estate_text(
        "version: 1\n"
        "vendors:\n"
        "  - {id: acme, contract_ends: 2027-03-31}\n"
        "  - {id: beta, contract_ends: 2027-03-31T12:00:00+02:00}\n"
        "  - {id: gamma, contract_ends: 2027-03-31 12:00:00Z}\n"
        "  - {id: delta, contract_ends: '2027-03-31'}\n"
    )
    ends = [v["contract_ends"] for v in document["vendors"]]
    assert ends == ["2027-03-31", "2027-03-31T10:00:00Z", "2027-03-31T12:00:00Z", "2027-03-31"]
    assert all(isinstance(value, str) for value in ends)
    estate = parse_estate(document)
    assert [v.contract_ends.isoformat() for v in estate.vendors] == [
        "2027-03-31T00:00:00+00:00",
        "2027-03-31T10:00:00+00:00",
        "2027-03-31T12:00:00+00:00",
        "2027-03-31T00:00:00+00:00",
    ]


def test_a_yaml_timestamp_without_offset_is_refused_with_its_path() -> None:
    document = load_estate_text(
        "version: 1\nvendors:\n  - {id: acme, contract_ends: 2027-03-31 12:00:00}\n"
    )
    assert document["vendors"][0]["contract_ends"] == "2027-03-31T12:00:00"
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(document)
    assert [p.path for p in caught.value.problems] == ["vendors[0].contract_ends"]


def test_yaml_keys_become_strings() -> None:
    document: Any = load_estate_text("version: 1\nlabels: {1: a, 2027-01-31: c, null: d}\n")
    assert document["labels"] == {"1": "a", "2027-01-31": "c", "None": "d"}


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        (
            "version: 1\nidentities:\n  - id: x\n    owner: team-a\n    owner: team-b\n",
            "line 5, column 5",
            "'owner'",
        ),
        ("version: 1\nowners: []\nversion: 1\n", "line 3, column 1", "'version'"),
        ("version: 1\nlabels: {1: a, true: b}\n", "line 2, column 16", "True"),
    ],
)
def test_a_duplicate_key_is_refused_not_silently_overridden(
    text: str, where: str, key: str
) -> None:
    # YAML keys are unique; a second `owner:` must not quietly replace the first.
    [(at, message)] = refusal(text)
    assert at == where
    assert message == f"duplicate key {key}"


# -- policy files --


def test_listed_policy_files_are_inlined(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "base.cedar").write_text("permit (principal, action, resource);\n")
    document = estate_document(2)
    document["policies"] = ["policies/base.cedar"]
    loaded = load_estate_file(write_estate(tmp_path / "estate.yaml", document))
    assert loaded["policies"] == [
        {"id": "policies/base.cedar", "source": "permit (principal, action, resource);\n"}
    ]
    assert [p.id for p in parse_estate(loaded).policies] == ["policies/base.cedar"]


def test_policy_paths_are_relative_to_the_estate_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "p.cedar").write_text("forbid (principal, action, resource);\n")
    document = estate_document(1)
    document["policies"] = ["p.cedar"]
    loaded = load_estate_file(write_estate(tmp_path / "conf" / "estate.yaml", document))
    assert loaded["policies"][0]["source"].startswith("forbid")


def test_a_missing_policy_file_is_a_problem_naming_its_entry(tmp_path: Path) -> None:
    document = estate_document(2)
    document["policies"] = ["policies/missing.cedar"]
    path = write_estate(tmp_path / "estate.yaml", document)
    with pytest.raises(EstateInvalid) as caught:
        load_estate_file(path)
    [problem] = caught.value.problems
    assert problem.path == "policies[0]"
    assert "policies/missing.cedar" in problem.message


def test_every_missing_policy_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "ok.cedar").write_text("permit (principal, action, resource);\n")
    document = estate_document(2)
    document["policies"] = ["gone.cedar", "ok.cedar", "also-gone.cedar", "."]
    path = write_estate(tmp_path / "estate.yaml", document)
    with pytest.raises(EstateInvalid) as caught:
        load_estate_file(path)
    assert [p.path for p in caught.value.problems] == ["policies[0]", "policies[2]", "policies[3]"]
