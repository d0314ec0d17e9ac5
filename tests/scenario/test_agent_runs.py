"""Agents end to end: a run that declares its intent, acts for a person and lives in a
window; delegation that narrows at every hop; and re-authorization mid-run. The real API
with its lifecycle worker, two local OIDC issuers (CI for the agents, SSO for people)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.attest.oidc_issuer import OidcIssuer
from tests.scenario import test_core_loop
from tests.scenario.test_core_loop import ACCESS, Loop, estate
from tether._internal.timeutil import format_time, utcnow

loop = test_core_loop.loop  # the node, its API and the CI issuer, as in the core loop

_AGENT = {
    "kind": "agent",
    "owner": "team-payments",
    "purpose": "Support agent",
    "justification": "SUP-1",
    "environment": "prod",
    "approval": {"by": "dana@example.com", "expires": "2099-01-31"},
}


@pytest.fixture
def sso() -> Iterator[OidcIssuer]:
    with OidcIssuer(key_types=("EC",)) as issuer:
        yield issuer


def agents_estate(loop: Loop, sso: OidcIssuer, **changes: Any) -> dict[str, Any]:
    document = estate(loop.idp)
    document["issuers"].append(sso.issuer_config("corp-sso").to_spec())
    document["people"] = [
        {
            "id": "alice",
            "issuer": "corp-sso",
            "subject": "alice@example.com",
            "may_act": ["support-agent"],
        },
        {"id": "bob", "issuer": "corp-sso", "subject": "bob@example.com"},
    ]
    document["identities"] += [
        {
            **_AGENT,
            "id": "support-agent",
            "attest": {"issuer": "github", "claims": {"repository": "acme/support"}},
            "entitlements": [
                {"profile": "orders-api-read"},
                {"profile": "billing-api"},
                {"profile": "opaque-api"},
            ],
            "intent_schema": {
                "tools": ["orders-api-read", "billing-api", "opaque-api"],
                "resources": ["https://orders.example.com", "https://billing.example.com"],
                "data_classes": ["pii", "internal"],
            },
            "may_act": ["helper-agent", "third-agent", "fourth-agent"],
            "max_delegation_depth": 2,
        },
        *(
            {**_AGENT, "id": name, "attest": {"issuer": "github", "claims": {"repository": repo}}}
            for name, repo in (
                ("helper-agent", "acme/helper-agent"),
                ("third-agent", "acme/third-agent"),
                ("fourth-agent", "acme/fourth-agent"),
            )
        ),
    ]
    for person in document["people"]:
        person.update(changes.get(person["id"], {}))
    return document


def start(loop: Loop, repository: str, body: dict[str, Any]) -> Any:
    attestation = loop.idp.github_actions_token(repository=repository)
    return loop.client.post(
        "/v1/tasks", json=body, headers={"Authorization": f"Bearer {attestation}"}
    )


def person(sso: OidcIssuer, email: str, minutes: int = 10) -> str:
    return sso.mint({"sub": email}, lifetime=dt.timedelta(minutes=minutes))


def intent(*tools: str, **extra: Any) -> dict[str, Any]:
    return {"purpose": "answer ticket 7", "tools": list(tools), **extra}


def test_a_run_for_a_person_gets_its_tools_only_and_dies_with_the_persons_access(
    loop: Loop, sso: OidcIssuer
) -> None:
    loop.apply(agents_estate(loop, sso))
    run = start(
        loop,
        "acme/support",
        {
            "name": "ticket-7",
            "ttl": "30m",
            "intent": intent("orders-api-read", "opaque-api", data_classes=["pii"]),
            "acting_for": {"token": person(sso, "alice@example.com")},
            "window": {"max_credentials": 3, "max_audiences": 1},
        },
    )
    assert run.status_code == 201, run.text
    started = run.json()
    assert started["run"]["principal"] == "person:alice"
    assert started["run"]["tools"] == ["orders-api-read", "opaque-api"]

    issued = loop.exchange(started["token"], audience="https://orders.example.com")
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    # A tool outside the declared intent is denied, with the reason.
    outside = loop.exchange(started["token"], audience="https://billing.example.com")
    assert outside.status_code == 403
    assert "outside the run's declared intent" in outside.json()["error_description"]
    denial = loop.audit("token.exchange")[-1]
    assert denial["result"] == "deny" and "guardrail:outside-intent" in str(denial["details"])
    # Governance sees the attempt: the agent reached outside its declared intent.
    loop.node.govern.evaluate_now(["support-agent"])
    found = loop.client.get(
        "/v1/findings",
        params={"identity": "support-agent", "rule": "agent-outside-intent"},
        headers=loop.admin(),
    ).json()["items"]
    assert [f["evidence"]["tools"] for f in found] == [["billing-api"]]
    # The window: one audience, three credentials.
    other_audience = loop.exchange(started["token"], audience="opaque-api", ttl="5m")
    assert other_audience.status_code == 403
    assert "distinct audience" in other_audience.json()["error_description"]
    assert loop.exchange(started["token"], audience="https://orders.example.com").status_code == 200
    assert loop.exchange(started["token"], audience="https://orders.example.com").status_code == 200
    full = loop.exchange(started["token"], audience="https://orders.example.com")
    assert full.status_code == 403 and "3 credential" in full.json()["error_description"]

    # The gateway's live check agrees, then alice leaves: the run's credentials die.
    check = loop.client.post("/v1/agents/check", json={"token": token}, headers=loop.admin())
    assert check.json()["allowed"] is True and check.json()["run"]["principal"] == "person:alice"
    loop.apply(agents_estate(loop, sso, alice={"status": "departed"}))
    assert loop.wait_inactive(token, limit=5) < 1.5
    task = loop.client.get(f"/v1/tasks/{started['id']}", headers=loop.admin()).json()
    assert task["status"] == "ended" and "alice has left" in task["end_reason"]
    check = loop.client.post("/v1/agents/check", json={"token": token}, headers=loop.admin())
    assert check.json()["allowed"] is False

    # Nobody acts for someone who does not name them, nor beyond the agent's schema.
    for body, status, words in (
        ({"acting_for": {"token": person(sso, "bob@example.com")}}, 403, "may not act for"),
        ({"acting_for": {"token": person(sso, "alice@example.com")}}, 403, "has left"),
        ({"acting_for": {"token": person(sso, "eve@example.com")}}, 400, "no person"),
        ({"intent": intent("orders-api-read", data_classes=["secret"])}, 400, "data_classes"),
        ({"intent": intent("admin-api")}, 400, "intent.tools"),
    ):
        refused = start(
            loop, "acme/support", {"name": "x", "intent": intent("orders-api-read"), **body}
        )
        assert refused.status_code == status, refused.text
        assert words in refused.text
    assert (
        start(loop, "acme/agent", {"name": "x", "intent": intent("orders-api-read")}).status_code
        == 400
    )
    assert loop.node.verify_audit().ok


def test_the_window_bounds_every_credential_and_its_end_revokes_them(
    loop: Loop, sso: OidcIssuer
) -> None:
    loop.apply(agents_estate(loop, sso))
    ends = utcnow() + dt.timedelta(seconds=3)
    run = start(
        loop,
        "acme/support",
        {
            "name": "short",
            "intent": intent("orders-api-read"),
            "window": {"end": format_time(ends)},
        },
    ).json()
    issued = loop.exchange(run["token"], audience="https://orders.example.com").json()
    assert issued["expires_in"] <= 3
    assert loop.wait_inactive(issued["access_token"], limit=10) < 5
    later = start(
        loop,
        "acme/support",
        {
            "name": "later",
            "intent": intent("orders-api-read"),
            "window": {"start": format_time(utcnow() + dt.timedelta(hours=1))},
        },
    ).json()
    early = loop.exchange(later["token"], audience="https://orders.example.com")
    assert early.status_code == 403 and "window opens" in early.json()["error_description"]


def _task(loop: Loop, repository: str) -> str:
    return str(start(loop, repository, {"name": "hop"}).json()["token"])


def test_delegation_narrows_at_every_hop_and_refuses_what_widens(
    loop: Loop, sso: OidcIssuer
) -> None:
    loop.apply(agents_estate(loop, sso))
    run = start(loop, "acme/support", {"name": "r", "intent": intent("orders-api-read")}).json()
    orders = "https://orders.example.com"
    first = loop.exchange(run["token"], audience=orders, scope="orders:read orders:list").json()
    names = ("helper-agent", "third-agent", "fourth-agent")
    helper, third, fourth = (_task(loop, f"acme/{n}") for n in names)

    stranger = _task(loop, "acme/agent")
    billing = "https://billing.example.com"

    def hop(subject: str, actor: str, **form: str) -> Any:
        return loop.exchange(subject, actor_token=actor, actor_token_type=ACCESS, **form)

    second = hop(first["access_token"], helper, scope="orders:read", ttl="4m")
    assert second.status_code == 200, second.text
    second_body = second.json()
    third_hop = hop(second_body["access_token"], third, ttl="2m")
    assert third_hop.status_code == 200, third_hop.text
    last = third_hop.json()
    assert [len(x["scope"].split()) for x in (first, second_body, last)] == [2, 1, 1]
    assert first["expires_in"] >= second_body["expires_in"] >= last["expires_in"]
    chain = {"sub": "third-agent", "act": {"sub": "helper-agent"}}
    claims = jwt.decode(last["access_token"], options={"verify_signature": False})
    assert claims["act"] == chain and claims["sub"] == "support-agent"
    assert loop.introspect(last["access_token"])["act"] == chain
    shown = loop.client.get(f"/v1/leases/{last['tether_lease']}", headers=loop.admin()).json()
    assert shown["delegation"] == ["third-agent", "helper-agent"]
    assert shown["parent"] == second_body["tether_lease"]
    audited = [e for e in loop.audit("token.exchange") if e["result"] == "allow"][-1]
    assert json.loads(audited["details"])["delegation"] == ["third-agent", "helper-agent"]

    refusals = [
        (hop(second_body["access_token"], third, scope="orders:list"), "invalid_scope", "widen"),
        (hop(last["access_token"], fourth), "invalid_request", "3 deep"),
        (hop(first["access_token"], stranger), "unauthorized_client", "may not act"),
        (hop(first["access_token"], helper, audience=billing), "invalid_target", "passthrough"),
        (hop(first["access_token"], helper, ttl="1h"), "invalid_request", "outlives"),
    ]
    for response, error, words in refusals:
        assert response.status_code == 400, response.text
        assert response.json()["error"] == error
        assert words in response.json()["error_description"]

    # Revoking a hop revokes every hop derived from it.
    loop.client.post("/oauth2/revoke", data={"token": second_body["access_token"]})
    assert loop.introspect(last["access_token"]) == {"active": False}
    assert loop.introspect(first["access_token"])["active"] is True


def test_a_policy_change_revokes_a_runs_credentials_mid_execution(
    loop: Loop, sso: OidcIssuer
) -> None:
    document = agents_estate(loop, sso)
    loop.apply(document)
    run = start(
        loop,
        "acme/support",
        {
            "name": "r",
            "intent": intent("orders-api-read"),
            "acting_for": {"token": person(sso, "alice@example.com")},
        },
    ).json()
    token = loop.exchange(run["token"], audience="https://orders.example.com").json()
    assert loop.introspect(token["access_token"])["active"] is True
    document["policies"] = [
        {
            "id": "no-agents-for-people.cedar",
            "source": '@reason("agents stop acting for people during the incident")\n'
            "forbid (principal, action, resource) when { context has run && "
            'context.run has principal_type && context.run.principal_type == "person" };\n',
        }
    ]
    started = time.monotonic()
    loop.apply(document)
    assert loop.wait_inactive(token["access_token"], limit=5) < 1.5
    assert time.monotonic() - started < 5
    revoked = loop.client.get(f"/v1/leases/{token['tether_lease']}", headers=loop.admin()).json()
    assert "agents stop acting for people" in revoked["end_reason"]


def test_the_sdk_starts_a_run_and_its_task_ends_everything(loop: Loop, sso: OidcIssuer) -> None:
    from tether.client import AgentRunAsk, WorkloadClient

    loop.apply(agents_estate(loop, sso))
    client = WorkloadClient(
        addr="http://testserver",
        attestation=lambda: loop.idp.github_actions_token(repository="acme/support"),
    )
    client._api._http = loop.client  # the SDK speaks HTTP to the in-process app
    ask = AgentRunAsk(
        purpose="answer ticket 9",
        tools=("orders-api-read",),
        acting_for=person(sso, "alice@example.com"),
        max_credentials=2,
    )
    with client.task("ticket-9", ttl="10m", run=ask) as task:
        token = task.token(audience="https://orders.example.com")
        assert loop.introspect(token)["active"]
        shown = loop.client.get(f"/v1/tasks/{task.id}", headers=loop.admin()).json()
        assert shown["run"]["principal"] == "person:alice"
        assert shown["run"]["max_credentials"] == 2
    assert loop.introspect(token) == {"active": False}


def test_a_run_for_an_identity_ends_when_the_token_that_proved_it_ends(
    loop: Loop, sso: OidcIssuer
) -> None:
    document = agents_estate(loop, sso)
    deployer = next(i for i in document["identities"] if i["id"] == "payments-deployer")
    deployer["may_act"] = ["support-agent"]
    loop.apply(document)
    principal = loop.start_task()
    run = start(
        loop,
        "acme/support",
        {
            "name": "for-the-deployer",
            "intent": intent("orders-api-read"),
            "acting_for": {"token": principal["token"]},
        },
    )
    assert run.status_code == 201, run.text
    assert run.json()["run"]["principal"] == "identity:payments-deployer"
    token = loop.exchange(run.json()["token"], audience="https://orders.example.com").json()
    ended = loop.client.post(f"/v1/tasks/{principal['id']}/end", headers=loop.admin())
    assert ended.status_code == 200, ended.text
    assert loop.wait_inactive(token["access_token"], limit=5) < 1.5
