"""Governance end to end (issue #10): an estate of over 200 identities with two planted
cases of every rule, usage fed through POST /v1/usage, real PostgreSQL and Redis
sessions sampled from the targets, and clean control identities that must stay clean.

In-process (a TestClient over the real app) with a settable clock, so that approvals,
dormancy and exception expiry are reached by moving time, not by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.clock import SettableClock
from tests.govern.world import AdminApi, admin_api
from tests.pg_cluster import PgCluster
from tests.redis_server import RedisServer, redis_server
from tether._internal.timeutil import format_time
from tether.model import DISCOVERY_RULES, KEY_SERVICE_RULES, RULES

pytestmark = pytest.mark.service

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
API = "https://api.example.com"
CONTROLS = 172


def _day(clock: SettableClock, days: float) -> str:
    return format_time(clock.now + dt.timedelta(days=days))


def _identity(identity_id: str, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": identity_id,
        "kind": "service_account",
        "owner": "team-a",
        "purpose": f"Purpose of {identity_id}",
        "justification": f"CHG-{abs(hash(identity_id)) % 10_000}",
        "environment": "prod",
        "criticality": "medium",
        "entitlements": [{"profile": "api-read", "scopes": ["read"]}],
    }
    spec.update(fields)
    return spec


def estate(clock: SettableClock) -> tuple[dict[str, Any], dict[str, str]]:
    """The estate, and the rule each planted identity is planted for."""
    far = _day(clock, 300)
    planted: dict[str, str] = {}
    identities: list[dict[str, Any]] = [
        _identity(f"c-{i:03d}", approval={"by": "dana@example.com", "expires": far})
        for i in range(CONTROLS)
    ]

    def plant(rule: str, identity_id: str, **fields: Any) -> None:
        planted[identity_id] = rule
        identities.append(_identity(identity_id, **fields))

    for n in (1, 2):
        plant("orphaned", f"p-orphan-{n}", owner="team-gone")
        plant("dormant", f"p-dormant-{n}")
        plant("retired-usable", f"p-retired-{n}")  # dropped from the file later: retired
        plant(
            "approval-expired",
            f"p-appr-exp-{n}",
            approval={"by": "dana@example.com", "expires": _day(clock, -1)},
        )
        plant(
            "approval-expiring",
            f"p-appr-soon-{n}",
            approval={"by": "dana@example.com", "expires": _day(clock, 5)},
        )
        plant("vendor-ended", f"p-vendor-end-{n}", vendor="old-vendor")
        plant("vendor-ending", f"p-vendor-soon-{n}", vendor="ending-vendor")
        plant("long-lived", f"p-long-{n}", entitlements=[{"profile": "long-api"}])
        plant("leaked", f"p-leak-{n}")
        plant("revocation-stuck", f"p-stuck-{n}", entitlements=[{"profile": "flaky-cache"}])
        plant("metadata-missing", f"p-meta-{n}", criticality="high")
        plant("review-overdue", f"p-review-{n}", kind="legacy_static")
    # The first of each is seen in real PostgreSQL sessions; the second in reported usage.
    plant("human-use", "p-human-1", entitlements=[{"profile": "app-db-ro"}])
    plant("human-use", "p-human-2")
    plant("reuse", "p-reuse-1", entitlements=[{"profile": "app-db-ro"}])
    plant("reuse", "p-reuse-2")
    plant("human-use", "p-human-3")
    plant("human-use", "p-human-redis", entitlements=[{"profile": "cache-ro"}])
    plant(
        "over-privileged",
        "p-overpriv-1",
        entitlements=[{"profile": "api-read", "scopes": ["read", "list"]}],
    )
    plant(
        "over-privileged",
        "p-overpriv-2",
        entitlements=[{"profile": "api-read", "scopes": ["read"]}, {"profile": "orders-api"}],
    )
    plant(
        "environment-crossing",
        "p-env-1",
        environment="staging",
        entitlements=[{"profile": "prod-api"}],
    )
    plant("environment-crossing", "p-env-2")
    plant("environment-crossing", "p-env-3", environment="staging")
    plant("insecure-authentication", "p-noattest", kind="workload")
    plant(
        "insecure-authentication",
        "p-glob",
        kind="workload",
        attest={"issuer": "gh", "claims": {"repository": "acme/*"}},
    )
    # Agents (issue #14): intent, delegation and the people they act for.
    agent = {
        "kind": "agent",
        "attest": {"issuer": "gh", "claims": {"repository": "acme/agents"}},
        "intent_schema": {"tools": ["api-read"]},
    }
    hops = ["p-hop-a", "p-hop-b", "p-hop-c"]
    for n in (1, 2):
        plant("agent-intent-undeclared", f"p-agent-undeclared-{n}", kind="agent")
        plant("agent-outside-intent", f"p-agent-outside-{n}", **agent)
        plant("delegation-chain-long", f"p-agent-deleg-{n}", **agent, may_act=hops)
        plant("agent-principal-departed", f"p-agent-gone-{n}", **agent)
    identities += [_identity(hop, **agent) for hop in hops]
    document = {
        "version": 1,
        "owners": [
            {"id": "team-a", "contact": "a@example.com"},
            {
                "id": "team-gone",
                "contact": "gone@example.com",
                "status": "departed",
                "left": _day(clock, -30),
            },
        ],
        "vendors": [
            {"id": "old-vendor", "contract_ends": _day(clock, -10)},
            {"id": "ending-vendor", "contract_ends": _day(clock, 10)},
        ],
        "issuers": [
            {
                "id": "gh",
                "preset": "github-actions",
                "issuer": "https://token.actions.githubusercontent.com",
                "jwks": {"keys": []},
                "audiences": ["tether"],
            }
        ],
        "profiles": [
            {
                "id": "api-read",
                "provider": "jwt",
                "audience": API,
                "scopes": ["read", "list"],
                "max_ttl": "15m",
            },
            {
                "id": "orders-api",
                "provider": "jwt",
                "audience": "https://orders.example.com",
                "max_ttl": "15m",
            },
            {
                "id": "long-api",
                "provider": "jwt",
                "audience": "https://long.example.com",
                "max_ttl": "4h",
            },
            {
                "id": "prod-api",
                "provider": "jwt",
                "audience": "https://prod.example.com",
                "max_ttl": "15m",
                "environment": "prod",
            },
            {
                "id": "app-db-ro",
                "provider": "postgres",
                "target": "app-db",
                "max_ttl": "1h",
                "grants": {"schema": "payments", "privileges": ["SELECT"]},
            },
            {
                "id": "cache-ro",
                "provider": "redis",
                "target": "cache",
                "max_ttl": "1h",
                "grants": {"categories": ["+@read"], "commands": ["+client|setname"]},
            },
            {"id": "flaky-cache", "provider": "redis", "target": "flaky", "max_ttl": "1h"},
        ],
        "identities": identities,
        "people": [
            {"id": "ann", "issuer": "gh", "subject": "ann", "may_act": ["p-agent-outside-1"]},
            {
                "id": "bob",
                "issuer": "gh",
                "subject": "bob",
                "status": "departed",
                "may_act": ["p-agent-gone-1", "p-agent-gone-2"],
            },
        ],
        "governance": {"workstation_sources": ["10.20.0.0/16"]},
    }
    for identity in identities:
        if identity["id"].startswith("p-meta-"):
            continue
        identity.setdefault("approval", {"by": "dana@example.com", "expires": far})
    return document, planted


class Estate(AdminApi):
    def jwt(self, identity_id: str, audience: str = API) -> str:
        """A token for the identity; the lease id it stands for."""
        introspected = self.post(
            "/oauth2/introspect", None, data={"token": self.jwt_token(identity_id, audience)}
        )
        return str(introspected["jti"])

    def jwt_token(self, identity_id: str, audience: str = API) -> str:
        """A token for the identity, exchanged for its task's token."""
        response = self.client.post(
            "/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": self.task(identity_id)["token"],
                "subject_token_type": ACCESS,
                "audience": audience,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def delegate(self, subject_token: str, actor_token: str) -> str:
        """One hop of delegation: the subject's token, now acted on by the actor."""
        response = self.client.post(
            "/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": subject_token,
                "subject_token_type": ACCESS,
                "actor_token": actor_token,
                "actor_token_type": ACCESS,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def creds(self, identity_id: str, profile: str) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/creds/{profile}",
            json={},
            headers={"Authorization": f"Bearer {self.task(identity_id)['token']}"},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def usage(self, lines: list[dict[str, Any]]) -> dict[str, Any]:
        body = "\n".join(json.dumps(line) for line in lines)
        response = self.client.post(
            "/v1/usage",
            content=body,
            headers={**self.admin, "content-type": "application/x-ndjson"},
        )
        assert response.status_code == 200, response.text
        result = dict(response.json())
        assert result["rejected"] == [], result
        return result

    def findings(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.get("/v1/findings", limit=10000, **params)["items"])


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[tuple[Estate, RedisServer]]:
    with redis_server() as cache, admin_api(tmp_path) as parts:
        yield Estate(*parts), cache


def _feed_controls(world: Estate, ids: list[str]) -> None:
    """Each control identity used its one entitlement, from one source, in the last days."""
    lines = []
    for n, identity_id in enumerate(ids):
        for days in (20, 1):
            lines.append(
                {
                    "identity": identity_id,
                    "at": _day(world.clock, -days),
                    "source": f"10.1.{n // 200}.{n % 200}",
                    "resource": API,
                    "scopes": ["read"],
                    "action": "GET /orders",
                }
            )
    world.usage(lines)


def test_every_planted_case_is_found_and_no_control_identity_has_a_finding(
    scenario: tuple[Estate, RedisServer], pg_cluster: PgCluster
) -> None:
    world, cache = scenario
    clock = world.clock
    document, planted = estate(clock)
    assert len(document["identities"]) >= 200
    world.post("/v1/targets", {"name": "app-db", "kind": "postgres", "dsn": pg_cluster.admin_dsn})
    world.post(
        "/v1/targets",
        {"name": "cache", "kind": "redis", "dsn": cache.url(cache.admin, cache.password)},
    )
    with redis_server() as flaky:
        world.post(
            "/v1/targets",
            {"name": "flaky", "kind": "redis", "dsn": flaky.url(flaky.admin, flaky.password)},
        )
        world.post("/v1/estate/apply", document)
        stuck = [world.creds(f"p-stuck-{n}", "flaky-cache")["lease"] for n in (1, 2)]
    # The flaky target is down now: revoking its credentials cannot complete.
    for lease_id in stuck:
        world.post("/v1/leases/revoke", {"lease": lease_id, "reason": "rotation"})
    controls = [i["id"] for i in document["identities"] if i["id"].startswith("c-")]
    _feed_controls(world, controls)

    def used(identity_id: str, days: float = 1, **fields: Any) -> dict[str, Any]:
        line = {
            "identity": identity_id,
            "at": _day(clock, -days),
            "source": "10.1.250.1",
            "resource": API,
            "scopes": ["read"],
        }
        line.update(fields)
        return line

    planted_ids = sorted(planted)
    # Every planted identity used what it holds, so only its planted case shows.
    world.usage([used(i) for i in planted_ids if not i.startswith(("p-dormant", "p-review"))])
    for resource in ("https://long.example.com",):
        world.usage([used(f"p-long-{n}", resource=resource, scopes=[]) for n in (1, 2)])
    world.usage([used("p-env-1", resource="https://prod.example.com", scopes=[])])
    # dormant: last used four months ago.
    world.usage([used(f"p-dormant-{n}", days=d) for n in (1, 2) for d in (130, 120)])
    # review overdue: watched for 40 days (a legacy_static is reviewed every 30), in use.
    world.usage([used(f"p-review-{n}", days=d) for n in (1, 2) for d in (40, 1)])
    # over-privileged: watched 45 days; `list` and orders-api never used.
    world.usage([used(f"p-overpriv-{n}", days=d) for n in (1, 2) for d in (45, 1)])
    # human use by a browser and from a workstation; reuse of one token from two hosts.
    world.usage(
        [
            used("p-human-2", user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)"),
            used("p-human-3", source="10.20.4.17"),
        ]
    )
    # Agent runs refused tools outside their intent (as issuance records them).
    world.usage(
        [
            used(f"p-agent-outside-{n}", action="intent.violation", resource="orders-api")
            for n in (1, 2)
        ]
    )
    # Three hops of delegation (RFC 8693 actor tokens) onto each agent's credential.
    for n in (1, 2):
        token = world.jwt_token(f"p-agent-deleg-{n}")
        for hop in ("p-hop-a", "p-hop-b", "p-hop-c"):
            token = world.delegate(token, world.task(hop)["token"])
    shared_token = world.jwt("p-reuse-2")
    world.usage(
        [
            {
                "credential_fingerprint": shared_token,
                "at": _day(clock, -1),
                "source": host,
                "resource": API,
                "scopes": ["read"],
            }
            for host in ("10.1.7.1", "10.1.8.2")
        ]
    )

    # Real sessions: psql as a workload's role; one role from two workloads; redis-cli.
    sessions = []
    human = world.creds("p-human-1", "app-db-ro")
    sessions.append(
        psycopg.connect(
            pg_cluster.dsn(human["username"], human["password"]), application_name="psql"
        )
    )
    reused = world.creds("p-reuse-1", "app-db-ro")
    for app in ("orders-worker", "billing-worker"):
        sessions.append(
            psycopg.connect(
                pg_cluster.dsn(reused["username"], reused["password"]), application_name=app
            )
        )
    redis_creds = world.creds("p-human-redis", "cache-ro")
    interactive = redis.Redis(
        host=cache.host,
        port=cache.port,
        username=redis_creds["username"],
        password=redis_creds["password"],
        socket_timeout=5,
    )
    interactive.client_setname("redis-cli")
    try:
        assert world.node.govern.sample_sessions() >= 4

        # Static secrets: still current for retired readers, leaked, shared across envs.
        for credential_id, readers in (
            ("retired-1", ["p-retired-1"]),
            ("retired-2", ["p-retired-2"]),
            ("leak-1", ["p-leak-1"]),
            ("leak-2", ["p-leak-2"]),
            ("shared", ["p-env-2", "p-env-3"]),
        ):
            world.post(
                "/v1/credentials",
                {
                    "id": credential_id,
                    "kind": "static",
                    "owner": "team-a",
                    "readers": readers,
                    "overlap": "1h",
                    "rotate_every": "30d",
                },
            )
        for n in (1, 2):
            world.post(f"/v1/credentials/leak-{n}/exposed", {"evidence": "found in a public gist"})
        # Dropped from the file: retired, while their vaulted secrets still work.
        document["identities"] = [
            i for i in document["identities"] if not i["id"].startswith("p-retired-")
        ]
        world.post("/v1/estate/apply", document)

        clock.advance(minutes=20)  # past revocation_stuck_after
        world.post("/v1/findings/evaluate")
        found = world.findings(state="open")
    finally:
        for session in sessions:
            session.close()
        interactive.close()

    by_identity: dict[str, set[str]] = {}
    for finding in found:
        by_identity.setdefault(finding["identity"], set()).add(finding["rule"])
        rule = RULES[finding["rule"]]
        assert finding["owasp_nhi"] == list(rule.owasp_nhi)
        assert finding["nist_csf"] == list(rule.nist_csf)
        assert finding["evidence"], finding
    missed = {i: r for i, r in planted.items() if r not in by_identity.get(i, set())}
    assert missed == {}, {i: sorted(by_identity.get(i, ())) for i in missed}
    flagged_controls = {i: sorted(r) for i, r in by_identity.items() if i.startswith("c-")}
    assert flagged_controls == {}
    per_rule: dict[str, int] = {}
    for identity_id, rule in planted.items():
        if rule in by_identity.get(identity_id, set()):
            per_rule[rule] = per_rule.get(rule, 0) + 1
    assert set(per_rule) == set(RULES) - DISCOVERY_RULES - KEY_SERVICE_RULES
    assert all(count >= 2 for count in per_rule.values()), per_rule

    shown = world.get("/v1/identities/p-glob")
    assert shown["risk"]["score"] > 0
    assert "insecure-authentication" in {f["rule"] for f in shown["findings"]}
    riskiest = world.get("/v1/identities", sort="risk", limit=5)["items"]
    assert [i["risk"] for i in riskiest] == sorted((i["risk"] for i in riskiest), reverse=True)
    assert riskiest[0]["id"].startswith("p-")
    # An identity a kind requires to attest, without a rule, is applied and refused issuance.
    join = world.post("/v1/join-tokens", {"identity": "p-noattest"})["token"]
    task = world.client.post(
        "/v1/tasks", json={"name": "x"}, headers={"Authorization": f"Bearer {join}"}
    )
    assert task.status_code == 201
    refused = world.client.post(
        "/oauth2/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": task.json()["token"],
            "subject_token_type": ACCESS,
            "audience": API,
        },
    )
    assert refused.status_code in (400, 403), refused.text
    assert "no attestation rule" in refused.text
