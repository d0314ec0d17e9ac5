"""The core loop end to end: a local OIDC issuer (its own keys, JWKS on loopback), the real
API with its lifecycle worker running, and the workload SDK's calls on the wire.

attest → task → token for an entitled audience → denied for another (reason in the OAuth
error and the audit) → introspection active → the justification ends → inactive.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.attest.oidc_issuer import OidcIssuer
from tether._internal.timeutil import format_time, utcnow
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def estate(
    idp: OidcIssuer,
    *,
    approval_expires: str = "2099-01-31",
    contract_ends: str = "2099-03-31",
    include_deployer: bool = True,
) -> dict[str, Any]:
    issuer = idp.issuer_config("github", preset="github-actions").to_spec()
    identities = [
        {
            "id": "acme-agent",
            "kind": "agent",
            "owner": "team-payments",
            "vendor": "acme",
            "purpose": "Vendor agent",
            "justification": "VND-1",
            "environment": "prod",
            "approval": {"by": "dana@example.com", "expires": "2099-01-31"},
            "attest": {"issuer": "github", "claims": {"repository": "acme/agent"}},
            "entitlements": [{"profile": "orders-api-read", "scopes": ["orders:read"]}],
        },
    ]
    if include_deployer:
        identities.append(
            {
                "id": "payments-deployer",
                "kind": "workload",
                "owner": "team-payments",
                "purpose": "Deploys payments",
                "justification": "CHG-2041",
                "environment": "prod",
                "approval": {"by": "dana@example.com", "expires": approval_expires},
                "attest": {
                    "issuer": "github",
                    "claims": {"repository": "acme/payments", "ref": "refs/heads/main"},
                },
                "entitlements": [
                    {"profile": "orders-api-read", "scopes": ["orders:read"]},
                    {"profile": "opaque-api"},
                ],
            }
        )
    return {
        "version": 1,
        "owners": [{"id": "team-payments", "contact": "payments@example.com"}],
        "vendors": [{"id": "acme", "contract_ends": contract_ends}],
        "issuers": [issuer],
        "profiles": [
            {
                "id": "orders-api-read",
                "provider": "jwt",
                "audience": "https://orders.example.com",
                "scopes": ["orders:read", "orders:list"],
                "max_ttl": "15m",
            },
            {
                "id": "billing-api",
                "provider": "jwt",
                "audience": "https://billing.example.com",
                "scopes": ["billing:read"],
                "max_ttl": "15m",
            },
            {"id": "opaque-api", "provider": "token", "scopes": ["metrics:push"], "max_ttl": "1h"},
        ],
        "identities": identities,
    }


class Loop:
    def __init__(self, node: Tether, client: TestClient, idp: OidcIssuer, root: str) -> None:
        self.node, self.client, self.idp, self.root = node, client, idp, root

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.root}"}

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/v1/estate/apply", json=doc, headers=self.admin())
        assert response.status_code == 200, response.text
        return dict(response.json())

    def start_task(self, name: str = "deploy-42", **claims: Any) -> dict[str, Any]:
        attestation = self.idp.github_actions_token(**claims)
        response = self.client.post(
            "/v1/tasks",
            json={"name": name, "ttl": "30m"},
            headers={"Authorization": f"Bearer {attestation}"},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def exchange(self, subject: str, subject_type: str = ACCESS, **form: str) -> Any:
        return self.client.post(
            "/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": subject,
                "subject_token_type": subject_type,
                **form,
            },
        )

    def introspect(self, token: str) -> dict[str, Any]:
        response = self.client.post(
            "/oauth2/introspect", data={"token": token}, headers=self.admin()
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def audit(self, action: str) -> list[dict[str, Any]]:
        items = self.client.get("/v1/audit", params={"limit": 10000}, headers=self.admin())
        return [e for e in items.json()["items"] if e["action"] == action]

    def wait_inactive(self, token: str, limit: float = 15.0) -> float:
        """Seconds until introspection says inactive; the bound only stops a hung test."""
        started = time.monotonic()
        while self.introspect(token)["active"]:
            if time.monotonic() - started > limit:
                pytest.fail(f"token still active after {limit} s")
            time.sleep(0.05)
        return time.monotonic() - started


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 't.db'}",
        public_url="http://tether.test",
        sweep_interval=0.1,
    )
    node = Tether(settings)
    root = node.initialize(1, 1).root_token
    with OidcIssuer(key_types=("RSA", "EC")) as idp:
        node.start()
        with TestClient(create_app(node)) as client:
            yield Loop(node, client, idp, root)
        node.stop()


def test_attest_issue_deny_introspect_and_end_the_task(loop: Loop) -> None:
    loop.apply(estate(loop.idp))
    task = loop.start_task()
    assert task["identity"] == "payments-deployer" and task["status"] == "active"

    issued = loop.exchange(task["token"], audience="https://orders.example.com")
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["issued_token_type"] == JWT_TYPE and body["scope"] == "orders:read"
    assert 0 < body["expires_in"] <= 15 * 60
    # The JWT verifies against Tether's published JWKS and carries the lease as jti.
    keys = loop.client.get("/.well-known/jwks.json").json()["keys"]
    assert (
        loop.client.get("/.well-known/openid-configuration")
        .json()["jwks_uri"]
        .endswith("/.well-known/jwks.json")
    )
    header = jwt.get_unverified_header(body["access_token"])
    public = jwt.PyJWK(next(k for k in keys if k["kid"] == header["kid"])).key
    claims = jwt.decode(
        body["access_token"],
        public,
        algorithms=["ES256"],
        audience="https://orders.example.com",
        issuer="http://tether.test",
    )
    assert claims["sub"] == "payments-deployer" and claims["jti"] == body["tether_lease"]
    assert claims["tether_task"] == task["id"]

    denied = loop.exchange(task["token"], audience="https://billing.example.com")
    assert denied.status_code == 403
    assert denied.json()["error"] == "access_denied"
    assert "entitle" in denied.json()["error_description"]
    deny_entry = loop.audit("token.exchange")[-1]
    assert deny_entry["result"] == "deny" and "entitle" in deny_entry["reason"]
    assert "guardrail:not-entitled" in json.loads(deny_entry["details"])["decision"]["policy_ids"]

    # Scopes can only narrow the entitlement.
    wider = loop.exchange(
        task["token"], audience="https://orders.example.com", scope="orders:read orders:list"
    )
    assert wider.status_code == 403

    assert loop.introspect(body["access_token"])["active"] is True
    opaque = loop.exchange(task["token"], audience="opaque-api").json()["access_token"]
    assert loop.introspect(opaque)["scope"] == "metrics:push"

    ended = loop.client.post(
        f"/v1/tasks/{task['id']}/end", headers={"Authorization": f"Bearer {task['token']}"}
    )
    assert ended.status_code == 200 and ended.json()["leases_revoked"] == 3
    # Task end revokes in the same request: inactive at once, task token included.
    assert loop.introspect(body["access_token"]) == {"active": False}
    assert loop.introspect(opaque) == {"active": False}
    assert loop.exchange(task["token"], audience="opaque-api").status_code == 400
    revocations = loop.audit("lease.revoke")
    assert {json.loads(e["details"])["lease_id"] for e in revocations} >= {body["tether_lease"]}
    assert loop.client.get("/v1/audit/verify", headers=loop.admin()).json()["ok"]


def test_a_credential_is_bounded_by_every_justification(loop: Loop) -> None:
    soon = format_time(utcnow() + dt.timedelta(minutes=3))
    loop.apply(estate(loop.idp, approval_expires=soon))
    task = loop.start_task()
    body = loop.exchange(task["token"], audience="opaque-api").json()
    assert body["tether_bounded_by"] == "approval expiry"
    assert body["expires_in"] <= 180
    short = loop.exchange(task["token"], audience="opaque-api", ttl="30s").json()
    assert short["tether_bounded_by"] == "requested ttl" and short["expires_in"] <= 30
    too_long = loop.exchange(task["token"], audience="opaque-api", ttl="2h")
    assert too_long.status_code == 403
    assert "exceeds profile opaque-api's maximum of 1h" in too_long.json()["error_description"]


@pytest.mark.parametrize("trigger", ["approval", "vendor", "retire", "kill-switch", "identity"])
def test_when_a_justification_ends_the_credential_dies(loop: Loop, trigger: str) -> None:
    loop.apply(estate(loop.idp))
    if trigger == "vendor":
        attestation = loop.idp.github_actions_token(repository="acme/agent")
        response = loop.client.post(
            "/v1/tasks",
            json={"name": "agent-run"},
            headers={"Authorization": f"Bearer {attestation}"},
        )
        task = response.json()
    else:
        task = loop.start_task()
    token = loop.exchange(task["token"], audience="https://orders.example.com").json()[
        "access_token"
    ]
    assert loop.introspect(token)["active"]

    past = format_time(utcnow() - dt.timedelta(seconds=1))
    ended_by: dict[str, Callable[[], None]] = {
        "approval": lambda: loop.apply(estate(loop.idp, approval_expires=past)),
        "vendor": lambda: loop.apply(estate(loop.idp, contract_ends=past)),
        "retire": lambda: loop.apply(estate(loop.idp, include_deployer=False)),
        "kill-switch": lambda: loop.client.post(
            "/v1/leases/revoke", json={"all": True}, headers=loop.admin()
        ),
        "identity": lambda: loop.client.post(
            "/v1/leases/revoke", json={"identity": task["identity"]}, headers=loop.admin()
        ),
    }
    ended_by[trigger]()
    loop.wait_inactive(token)
    # Nothing new is issued either, and the refusal says why.
    again = loop.exchange(task["token"], audience="https://orders.example.com")
    assert again.status_code in (400, 403)
    revoked = [json.loads(e["details"])["lease_id"] for e in loop.audit("lease.revoke")]
    assert revoked, "the revocation is audited per lease"


def test_sdk_task_context_manager_revokes_on_exit(loop: Loop) -> None:
    from tether.client import WorkloadClient

    loop.apply(estate(loop.idp))
    client = WorkloadClient(addr="http://testserver", attestation=loop.idp.github_actions_token)
    client._api._http = loop.client  # the SDK speaks HTTP to the in-process app
    with client.task("deploy-42") as task:
        token = task.token(audience="https://orders.example.com")
        assert task.token(audience="https://orders.example.com") == token  # cached
        assert loop.introspect(token)["active"]
    assert loop.introspect(token) == {"active": False}
    assert task.ended


def test_replayed_attestation_and_attacks_are_refused(loop: Loop) -> None:
    loop.apply(estate(loop.idp))
    attestation = loop.idp.github_actions_token()
    first = loop.client.post(
        "/v1/tasks", json={"name": "a"}, headers={"Authorization": f"Bearer {attestation}"}
    )
    assert first.status_code == 201
    replay = loop.client.post(
        "/v1/tasks", json={"name": "a"}, headers={"Authorization": f"Bearer {attestation}"}
    )
    assert replay.status_code == 400 and "already used" in replay.json()["error_description"]
    stranger = loop.idp.github_actions_token(repository="evil/repo")
    nobody = loop.exchange(stranger, JWT_TYPE, audience="https://orders.example.com")
    assert nobody.status_code == 400 and nobody.json()["error"] == "invalid_grant"


def test_a_run_maps_to_one_task(loop: Loop) -> None:
    loop.apply(estate(loop.idp))
    first = loop.start_task(run_id="777", run_attempt="1")
    second = loop.start_task(run_id="777", run_attempt="1")
    retry = loop.start_task(run_id="777", run_attempt="2")
    assert first["id"] == second["id"] != retry["id"]
    assert first["token"] != second["token"]


def test_implicit_task_from_attestation(loop: Loop) -> None:
    loop.apply(estate(loop.idp))
    body = loop.exchange(
        loop.idp.github_actions_token(), JWT_TYPE, audience="https://orders.example.com"
    ).json()
    assert body["tether_bounded_by"] in ("attestation expiry", "task deadline")
    lease = loop.client.get(f"/v1/leases/{body['tether_lease']}", headers=loop.admin()).json()
    task = loop.client.get(f"/v1/tasks/{lease['task']}", headers=loop.admin()).json()
    assert task["implicit"] is True


def test_delegation_records_the_actor(loop: Loop) -> None:
    document = estate(loop.idp)
    deployer = next(i for i in document["identities"] if i["id"] == "payments-deployer")

    def delegate() -> Any:
        task = loop.start_task()
        attestation = loop.idp.github_actions_token(repository="acme/agent")
        agent = loop.client.post(
            "/v1/tasks", json={"name": "agent"}, headers={"Authorization": f"Bearer {attestation}"}
        ).json()
        return loop.exchange(
            task["token"],
            audience="https://orders.example.com",
            actor_token=agent["token"],
            actor_token_type=ACCESS,
        )

    loop.apply(document)
    # Nobody may act for an identity whose may_act does not name them.
    refused = delegate()
    assert refused.status_code == 400
    assert refused.json()["error"] == "unauthorized_client"
    deployer["may_act"] = ["acme-agent"]
    loop.apply(document)
    body = delegate().json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["act"] == {"sub": "acme-agent"}
    assert loop.introspect(body["access_token"])["act"] == {"sub": "acme-agent"}


def test_renewal_decides_again_and_stays_bounded(loop: Loop) -> None:
    soon = format_time(utcnow() + dt.timedelta(minutes=3))
    loop.apply(estate(loop.idp, approval_expires=soon))
    task = loop.start_task()  # its attestation (so the task) lasts 5 minutes
    issued = loop.exchange(task["token"], audience="opaque-api", ttl="1m").json()
    auth = {"Authorization": f"Bearer {task['token']}"}
    renewed = loop.client.post(
        f"/v1/leases/{issued['tether_lease']}/renew", json={"ttl": "1h"}, headers=auth
    )
    assert renewed.status_code == 200, renewed.text
    # Asked for an hour; the approval ends in 3 minutes, so that bounds the renewal.
    assert renewed.json()["bounded_by"] == "approval expiry"
    assert loop.introspect(issued["access_token"])["exp"] > utcnow().timestamp() + 2 * 60
    renewals = loop.audit("lease.renew")
    assert renewals[-1]["result"] == "allow"
    # Another task's token may not renew it; once the approval lapses, policy says no.
    other = loop.start_task(name="other")
    foreign = loop.client.post(
        f"/v1/leases/{issued['tether_lease']}/renew",
        json={},
        headers={"Authorization": f"Bearer {other['token']}"},
    )
    assert foreign.status_code == 404
    loop.apply(estate(loop.idp, approval_expires=format_time(utcnow() + dt.timedelta(seconds=2))))
    loop.wait_inactive(issued["access_token"])
    late = loop.client.post(f"/v1/leases/{issued['tether_lease']}/renew", json={}, headers=auth)
    assert late.status_code in (400, 403)
