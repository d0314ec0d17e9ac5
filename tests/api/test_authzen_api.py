"""The AuthZEN Authorization API over HTTP, on every storage backend: decisions (a deny is
a 200), 400 for a missing subject, action or resource, X-Request-ID echoed, unknown
fields ignored, boxcarring with each semantic, the three searches paged, the metadata
document, the roles that may ask, and the audit summary of the decisions."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.authzen.world import apply, evaluation, records_document
from tether.api import create_app
from tether.app import Tether
from tether.authzen import AUDIT_ACTION

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"


@dataclass
class World:
    client: TestClient
    node: Tether
    tokens: dict[str, str]

    def post(self, path: str, body: Any, who: str = "pep", **headers: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}
        return self.client.post(path, json=body, headers={**auth, **headers})

    def decide(self, body: Any, who: str = "pep") -> bool:
        response = self.post(EVALUATION, body, who)
        assert response.status_code == 200, response.text
        decision: bool = response.json()["decision"]
        return decision


def _two_applications() -> dict[str, Any]:
    document = records_document()
    other = copy.deepcopy(document["applications"][0])
    other.update(
        id="archive",
        namespace="Archive",
        actions=["read"],
        entities=[{"type": "User", "id": "zoe"}, {"type": "Record", "id": "a1"}],
        policies=[{"id": "archive.cedar", "source": "permit (principal, action, resource);"}],
    )
    document["applications"].append(other)
    return document


@pytest.fixture
def world(node: Tether) -> Iterator[World]:
    apply(node, _two_applications())
    tokens = {"root": node.root_token}  # type: ignore[attr-defined]
    for name, roles in (
        ("pep", ["pdp:records"]),
        ("archive", ["pdp:archive"]),
        ("undeclared", ["pdp:billing"]),
        ("bare", ["pdp"]),
        ("auditor", ["auditor"]),
    ):
        tokens[name], _ = node.tokens.create(name, roles, "test")
    with TestClient(create_app(node)) as client:
        yield World(client, node, tokens)


# -- single evaluations --


def test_a_permit_says_which_policy(world: World) -> None:
    response = world.post(EVALUATION, evaluation("bob", "read", "r1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "decision": True,
        "context": {
            "reason_admin": {
                "policies": ["policies/records.cedar#owners"],
                "reasons": [
                    "permitted by policies/records.cedar#owners: "
                    "owners may read and edit their own records"
                ],
            }
        },
    }


def test_a_deny_is_a_200_with_decision_false(world: World) -> None:
    response = world.post(EVALUATION, evaluation("bob", "edit", "r3"))
    assert response.status_code == 200
    body = response.json()
    assert body["decision"] is False
    assert body["context"]["reason_admin"]["policies"] == [
        "policies/records.cedar#no-archived-edits"
    ]


@pytest.mark.parametrize("missing", ["subject", "action", "resource"])
def test_a_missing_subject_action_or_resource_is_a_400(world: World, missing: str) -> None:
    body = evaluation("bob", "read", "r1")
    del body[missing]
    response = world.post(EVALUATION, body)
    assert response.status_code == 400
    assert f"{missing}: is required" in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {
            "subject": {"type": "User"},
            "action": {"name": "read"},
            "resource": {"type": "R", "id": "1"},
        },
        {**evaluation("bob", "read", "r1"), "context": "not an object"},
    ],
)
def test_malformed_bodies_are_a_400(world: World, body: Any) -> None:
    assert world.post(EVALUATION, body).status_code == 400


def test_the_request_id_is_echoed(world: World) -> None:
    request_id = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
    response = world.post(
        EVALUATION, evaluation("bob", "read", "r1"), **{"X-Request-ID": request_id}
    )
    assert response.headers["x-request-id"] == request_id
    refused = world.post(EVALUATION, {}, **{"X-Request-ID": request_id})
    assert refused.status_code == 400
    assert refused.headers["x-request-id"] == request_id
    assert world.post(EVALUATION, evaluation("bob", "read", "r1")).headers["x-request-id"]
    # Not echoed into the log unless tame: visible ASCII, at most 128 characters.
    for wild in ("two words", "x" * 129):
        answered = world.post(EVALUATION, evaluation("bob", "read", "r1"), **{"X-Request-ID": wild})
        assert answered.headers["x-request-id"] != wild


def test_unknown_fields_are_ignored(world: World) -> None:
    body = evaluation("bob", "read", "r1", future_field={"x": 1})
    body["subject"]["shape"] = "round"
    body["action"]["verb"] = "GET"
    assert world.decide(body)


def test_properties_are_added_to_the_entities_attributes(world: World) -> None:
    bob = {"__entity": {"type": "User", "id": "bob"}}
    unknown = evaluation("bob", "read", "r9")
    assert not world.decide(unknown)
    unknown["resource"]["properties"] = {"owner": bob}
    assert world.decide(unknown)
    archived = evaluation("bob", "edit", "r1")
    archived["resource"]["properties"] = {"archived": True}
    assert not world.decide(archived)


# -- boxcarring --


def _three(semantic: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": {"type": "User", "id": "bob"},
        "action": {"name": "read"},
        "evaluations": [{"resource": {"type": "Record", "id": r}} for r in ("r1", "r2", "r3")],
    }
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic, "another_option": "value"}
    return body


def _decisions(response: httpx.Response) -> list[bool]:
    assert response.status_code == 200, response.text
    return [e["decision"] for e in response.json()["evaluations"]]


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        (None, [True, False, True]),
        ("execute_all", [True, False, True]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
def test_batch_semantics(world: World, semantic: str | None, expected: list[bool]) -> None:
    assert _decisions(world.post(EVALUATIONS, _three(semantic))) == expected


def test_an_unknown_semantic_is_a_400(world: World) -> None:
    assert world.post(EVALUATIONS, _three("some_of_them")).status_code == 400


def test_items_override_the_defaults(world: World) -> None:
    body = _three()
    body["evaluations"][2]["action"] = {"name": "edit"}  # r3 is archived
    body["evaluations"][0]["subject"] = {"type": "User", "id": "dave"}
    assert _decisions(world.post(EVALUATIONS, body)) == [False, False, False]
    body["context"] = {"anything": "goes"}
    assert _decisions(world.post(EVALUATIONS, body)) == [False, False, False]


def test_a_failing_item_is_a_deny_not_an_error(world: World) -> None:
    body = {
        "subject": {"type": "User", "id": "bob"},
        "evaluations": [
            {"resource": {"type": "Record", "id": "r1"}},  # no action anywhere
            {"action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}},
            "not an object",
            {
                "action": {"name": "read"},
                "resource": {"type": "Record", "id": "r1"},
                "context": {"x": 1.5},
            },
        ],
    }
    response = world.post(EVALUATIONS, body)
    assert _decisions(response) == [False, True, False, False]
    first = response.json()["evaluations"][0]
    assert first["context"]["error"] == {
        "status": 400,
        "message": "evaluations[0].action: is required",
    }


def test_without_evaluations_it_is_a_single_evaluation(world: World) -> None:
    response = world.post(EVALUATIONS, evaluation("bob", "read", "r1"))
    assert response.status_code == 200
    assert response.json()["decision"] is True
    assert world.post(EVALUATIONS, {"evaluations": []}).status_code == 400


# -- searches --


def _page_through(world: World, path: str, body: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    body = {**body, "page": {"limit": 1}}
    for _ in range(10):
        response = world.post(path, body)
        assert response.status_code == 200, response.text
        page = response.json()["page"]
        results = response.json()["results"]
        assert page["count"] == len(results) <= 1
        found += results
        if not page["next_token"]:
            return found
        body = {**body, "page": {"limit": 1, "token": page["next_token"]}}
    raise AssertionError("the pages did not end")


def test_subject_search_pages(world: World) -> None:
    body = {
        "subject": {"type": "User", "id": "ignored"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "r1"},
    }
    expected = [{"type": "User", "id": u} for u in ("alice", "bob", "carol")]
    assert _page_through(world, "/access/v1/search/subject", body) == expected
    whole = world.post("/access/v1/search/subject", body).json()
    assert whole == {"page": {"next_token": "", "count": 3}, "results": expected}


def test_resource_search_pages(world: World) -> None:
    body = {
        "subject": {"type": "User", "id": "bob"},
        "action": {"name": "read"},
        "resource": {"type": "Record"},
    }
    assert _page_through(world, "/access/v1/search/resource", body) == [
        {"type": "Record", "id": "r1"},
        {"type": "Record", "id": "r3"},
    ]


def test_action_search_pages(world: World) -> None:
    body = {"subject": {"type": "User", "id": "alice"}, "resource": {"type": "Record", "id": "r2"}}
    assert _page_through(world, "/access/v1/search/action", body) == [
        {"name": "delete"},
        {"name": "edit"},
        {"name": "read"},
    ]


def test_a_page_token_of_another_query_is_a_400(world: World) -> None:
    body: dict[str, Any] = {
        "subject": {"type": "User"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "r1"},
        "page": {"limit": 1},
    }
    token = world.post("/access/v1/search/subject", body).json()["page"]["next_token"]
    body["resource"]["id"] = "r2"
    body["page"]["token"] = token
    assert world.post("/access/v1/search/subject", body).status_code == 400
    del body["subject"]
    assert world.post("/access/v1/search/subject", body).status_code == 400


# -- metadata --


def test_the_metadata_document(world: World) -> None:
    response = world.client.get("/.well-known/authzen-configuration")  # no token: public
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    metadata = response.json()
    base = world.node.settings.issuer_url
    # REQUIRED by the spec, and the endpoints this PDP has (OPTIONAL parameters).
    assert metadata["policy_decision_point"] == base
    assert metadata["access_evaluation_endpoint"] == f"{base}/access/v1/evaluation"
    assert metadata == {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}{EVALUATION}",
        "access_evaluations_endpoint": f"{base}{EVALUATIONS}",
        "search_subject_endpoint": f"{base}/access/v1/search/subject",
        "search_resource_endpoint": f"{base}/access/v1/search/resource",
        "search_action_endpoint": f"{base}/access/v1/search/action",
    }
    paths = {route.path for route in world.client.app.routes}  # type: ignore[attr-defined]
    for name, url in metadata.items():
        if name != "policy_decision_point":
            assert url.removeprefix(base) in paths


# -- who may ask --


def test_a_token_without_a_pdp_role_is_refused(world: World) -> None:
    for who in ("root", "auditor"):
        response = world.post(EVALUATION, evaluation("bob", "read", "r1"), who)
        assert response.status_code == 403
        assert "pdp" in response.json()["message"]
    assert world.post(EVALUATION, evaluation("bob", "read", "r1"), "nobody").status_code == 401


def test_a_token_reaches_only_its_own_application(world: World) -> None:
    # pdp:archive evaluates against archive, whose policy permits everything of its own.
    assert world.decide(
        {
            "subject": {"type": "User", "id": "zoe"},
            "action": {"name": "read"},
            "resource": {"type": "Record", "id": "a1"},
        },
        "archive",
    )
    assert world.decide(evaluation("zoe", "read", "a1"), "archive")  # Archive::User
    assert not world.decide(evaluation("zoe", "read", "a1"))  # not in records
    found = world.post(
        "/access/v1/search/subject",
        {
            "subject": {"type": "User"},
            "action": {"name": "read"},
            "resource": {"type": "Record", "id": "r1"},
        },
        "archive",
    ).json()["results"]
    assert found == [{"type": "User", "id": "zoe"}]  # not records' alice, bob or carol


def test_an_undeclared_application_and_an_ambiguous_pdp_role_are_refused(world: World) -> None:
    response = world.post(EVALUATION, evaluation("bob", "read", "r1"), "undeclared")
    assert response.status_code == 403
    assert "billing" in response.json()["message"]
    ambiguous = world.post(EVALUATION, evaluation("bob", "read", "r1"), "bare")
    assert ambiguous.status_code == 403
    assert "pdp:<application>" in ambiguous.json()["message"]
    apply(world.node, records_document())  # one application again: bare pdp reaches it
    assert world.decide(evaluation("bob", "read", "r1"), "bare")


def test_api_tokens_take_pdp_roles(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['root']}"}
    for roles, status in ((["pdp:records"], 201), (["pdp"], 201), (["pdp:a..b"], 422)):
        response = world.client.post(
            "/v1/tokens", json={"name": "x", "roles": roles}, headers=headers
        )
        assert response.status_code == status, response.text


# -- audit --


def test_decisions_are_audited_as_a_summary_and_the_chain_verifies(world: World) -> None:
    for resource in ("r1", "r2", "r3"):
        world.decide(evaluation("bob", "read", resource))
    world.post(EVALUATIONS, _three())
    assert world.node.pdp.flush_audit(force=True) == 1
    headers = {"Authorization": f"Bearer {world.tokens['root']}"}
    items = world.client.get("/v1/audit", params={"limit": 1000}, headers=headers).json()["items"]
    (summary,) = [i for i in items if i["action"] == AUDIT_ACTION]
    details = (
        json.loads(summary["details"])
        if isinstance(summary["details"], str)
        else summary["details"]
    )
    assert details["application"] == "records"
    assert details["by_action"] == {"read": {"permit": 4, "deny": 2}}
    assert {s["resource"]["id"] for s in details["deny_samples"]} == {"r2"}
    verified = world.client.get("/v1/audit/verify", headers=headers).json()
    assert verified["ok"] is True
