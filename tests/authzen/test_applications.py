"""Applications in the estate: validated with the path of each bad field, policies parsed
under the application's namespace, policy files read beside the estate file, stored and
compiled per estate version."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.authzen.world import apply, records_document
from tether.app import Tether
from tether.authzen import application_problems
from tether.estate import EstateInvalid, load_estate_file, parse_estate


def _app(**fields: Any) -> dict[str, Any]:
    app = copy.deepcopy(records_document()["applications"][0])
    app.update(fields)
    return app


def _problems(*apps: Any) -> dict[str, str]:
    return {p.path: p.message for p in application_problems(list(apps))}


def test_the_records_application_is_valid() -> None:
    assert _problems(_app()) == {}


def test_a_bad_parent_is_named_by_its_path() -> None:
    app = _app()
    app["entities"][3]["parents"] = [{"type": "no-such-type", "id": "x"}]
    assert _problems(app) == {
        "applications[0].entities[3].parents[0].type": (
            "must be a Cedar type name (letters, digits, _; not starting with a digit)"
        )
    }


def test_an_undeclared_parent_is_refused() -> None:
    app = _app()
    app["entities"][3]["parents"] = [{"type": "Group", "id": "auditors"}]
    assert _problems(app) == {
        "applications[0].entities[3].parents[0]": (
            'no entity Group::"auditors" is declared in entities'
        )
    }


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"id": "tether"}, "applications[0].id", "Tether's own"),
        ({"id": "a b"}, "applications[0].id", "ASCII letters"),
        ({"namespace": "not a namespace"}, "applications[0].namespace", "Cedar namespace"),
        ({"colour": "blue"}, "applications[0].colour", "unknown field"),
        ({"actions": ["read", "read"]}, "applications[0].actions[1]", "listed twice"),
        ({"audit": {"deny_samples": 1000}}, "applications[0].audit.deny_samples", "0 to 100"),
        ({"audit": {"summary_every": "soon"}}, "applications[0].audit.summary_every", ""),
        ({"policies": ["records.cedar"]}, "applications[0].policies[0]", "was not sent"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], path: str, words: str) -> None:
    problems = _problems(_app(**change))
    assert path in problems, problems
    assert words in problems[path]


def test_attributes_must_be_cedar_values() -> None:
    app = _app()
    app["entities"][0]["attrs"] = {"score": 1.5, "note": None}
    problems = _problems(app)
    assert "floats" in problems["applications[0].entities[0].attrs.score"]
    assert "null" in problems["applications[0].entities[0].attrs.note"]


def test_duplicate_entities_and_applications_are_refused() -> None:
    app = _app()
    app["entities"].append({"type": "User", "id": "bob"})
    problems = _problems(app, _app())
    assert (
        problems["applications[0].entities[9].id"]
        == 'User::"bob" is applications[0].entities[3] already'
    )
    assert problems["applications[1].id"] == "duplicate id 'records'"


def test_a_policy_that_does_not_parse_is_refused_with_its_file() -> None:
    app = _app(
        policies=[{"id": "bad.cedar", "source": "permit (principal, action, resource) when {"}]
    )
    ((path, message),) = _problems(app).items()
    assert path == "applications[0].policies[0]"
    assert message.startswith("bad.cedar: cannot parse")


def test_a_policy_naming_another_namespace_is_refused() -> None:
    source = (
        'permit (principal == Billing::User::"bob", action == Records::Action::"read", resource);'
    )
    problems = _problems(_app(policies=[{"id": "p.cedar", "source": source}]))
    assert problems == {
        "applications[0].policies[0]": (
            "p.cedar: type Billing::User is not in the application's namespace Records "
            "(write Records::<Type>)"
        )
    }


def test_the_estate_refuses_a_bad_application_and_names_it() -> None:
    document = records_document()
    document["applications"][0]["entities"][3]["parents"] = [{"type": "Group", "id": "x"}]
    with pytest.raises(EstateInvalid) as refused:
        parse_estate(document)
    assert [p.path for p in refused.value.problems] == ["applications[0].entities[3].parents[0]"]


def test_policy_files_are_read_relative_to_the_estate_file(tmp_path: Path) -> None:
    (tmp_path / "estate.yaml").write_text(
        "version: 1\napplications:\n  - {id: a, namespace: A, policies: [missing.cedar]}\n"
    )
    with pytest.raises(EstateInvalid) as refused:
        load_estate_file(tmp_path / "estate.yaml")
    assert refused.value.problems[0].path == "applications[0].policies[0]"
    document = records_document()
    policy = document["applications"][0]["policies"][0]
    assert policy["id"] == "policies/records.cedar"
    assert '@id("owners")' in policy["source"]


def test_applying_stores_the_application_and_the_pdp_compiles_it(node: Tether) -> None:
    apply(node, records_document())
    assert node.pdp.applications == ("records",)
    plan = node.estate.plan(parse_estate(records_document()))
    assert plan.empty  # idempotent
    without = records_document()
    del without["applications"]
    apply(node, without)
    assert node.pdp.applications == ()
