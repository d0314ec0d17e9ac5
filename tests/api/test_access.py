"""The access table, called as every kind of caller on every route of the real app; the
client address behind proxies; strict JSON; bounded bodies and queries; clean 500s."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from tests.factories import estate_document
from tether.api import create_app
from tether.api._access import ROUTES, SMALL_BODY, Rule, Subject, Who, check_table
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.issuance import ExchangeRequest
from tether.model import LeaseState
from tether.providers import ACCESS_TOKEN_TYPE
from tether.store import LeaseFilter

API_AUDIENCE = "https://api.example.com"
OWNER_A, OWNER_B = "team-a", "team-b"
IDENTITY_A, IDENTITY_B = "nhi-00000", "nhi-00001"  # service_account of A, api_key of B


@dataclass
class World:
    client: TestClient
    node: Tether
    tokens: dict[str, str | None]
    task_a: str
    task_b: str
    lease_b: str


def _node(tmp_path: Path, **settings: Any) -> Tether:
    return Tether(
        Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}", **settings)
    )


def _init(client: TestClient) -> str:
    init = client.post("/v1/sys/init", json={"shares": 1, "threshold": 1}).json()
    client.post("/v1/sys/unseal", json={"share": init["shares"][0]})
    return str(init["root_token"])


def _api_token(client: TestClient, root: str, role: str) -> str:
    response = client.post("/v1/tokens", json={"name": role, "roles": [role]}, headers=_auth(root))
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def _auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def _task_with_lease(node: Tether, identity: str) -> tuple[str, str, str]:
    join, _ = node.issuance.create_join_token(identity, dt.timedelta(minutes=5), "test")
    started = node.issuance.start_task(join, f"task-of-{identity}", dt.timedelta(hours=1), None)
    issued = node.issuance.exchange(
        ExchangeRequest(
            subject_token=started.token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience=API_AUDIENCE,
        )
    )
    return started.task.id, started.token, issued.lease_id


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    node = _node(tmp_path)
    with TestClient(create_app(node), client=("127.0.0.1", 40000)) as client:
        root = _init(client)
        document = estate_document(8)
        node.estate.apply(parse_estate(document), "test", document)
        node.view.reload()
        task_a, task_token_a, _ = _task_with_lease(node, IDENTITY_A)
        task_b, _, lease_b = _task_with_lease(node, IDENTITY_B)
        tokens: dict[str, str | None] = {
            "none": None,
            "malformed": "not-a-token",
            "unknown": _api_token(client, root, "auditor")[:-6] + "AAAAAA",
            "auditor": _api_token(client, root, "auditor"),
            "introspect": _api_token(client, root, "introspect"),
            "owner-a": _api_token(client, root, f"owner:{OWNER_A}"),
            "task-a": task_token_a,
            "admin": root,
        }
        yield World(client, node, tokens, task_a, task_b, lease_b)
    node.stop()


def _concrete(path: str, w: World) -> str:
    values = {
        "task_id": w.task_b,
        "lease_id": w.lease_b,
        "identity_id": IDENTITY_B,
        "token_id": "tok_0000000000000000",
        "name": "db",
        "profile_id": "db-ro",
        "credential_id": "cred-x",
        "campaign_id": "rev_000000000000",
        "item_id": "rvi_00000000000000000000",
        "exception_id": "exc_0000000000000000",
        "sink_id": "hook",
        "approval_id": "apr_0000000000000000",
        "finding_id": "fnd_0000000000000000",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _call(w: World, method: str, path: str, token: str | None) -> int:
    response = w.client.request(
        method, _concrete(path, w), headers=_auth(token), json={} if method == "POST" else None
    )
    return response.status_code


def _kinds(caller: str) -> set[Who]:
    return {
        "auditor": {Who.AUDITOR},
        "introspect": {Who.INTROSPECT},
        "owner-a": {Who.OWNER},
        "admin": {Who.ADMIN},
    }.get(caller, set())


def _expected(rule: Rule, caller: str) -> str:
    """What the table says this caller gets: pass, 401, 403 or 404 (someone else's)."""
    if Who.ANYONE in rule.who:
        return "pass"
    if Who.WORKLOAD in rule.who and caller in ("none", "malformed", "unknown", "task-a"):
        # Not an API token (or none: a client certificate over mTLS may be the evidence):
        # issuance verifies the evidence, not the table.
        return "service"
    if caller in ("none", "malformed", "unknown"):
        return "401"
    if caller == "task-a":
        if Who.TASK not in rule.who:
            return "401"  # not an API token
        if rule.subject is Subject.TASK:
            return "403"  # the token of another task
        if rule.subject is Subject.LEASE:
            return "404"  # a lease of another task
        return "pass"
    allowed = _kinds(caller) & rule.who
    if not allowed:
        return "403"
    if allowed == {Who.OWNER} and rule.subject is not None:
        return "404"  # every object in the world's paths is owner B's
    return "pass"


def _app_routes(app: Any) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    )


def test_every_route_of_the_app_has_exactly_one_rule(world: World) -> None:
    routes = _app_routes(world.client.app)
    assert routes, "the app has routes"
    assert set(routes) == set(ROUTES)


def test_an_app_with_a_route_missing_from_the_table_is_not_built(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.api import _access

    missing = dict(ROUTES)
    del missing[("GET", "/v1/audit")]
    monkeypatch.setattr(_access, "ROUTES", missing)
    with pytest.raises(LookupError, match="GET /v1/audit"):
        create_app(world.node)


def test_the_table_refuses_a_write_the_auditor_could_reach() -> None:
    with pytest.raises(AssertionError, match="auditor role is read-only"):
        check_table({("POST", "/v1/x"): Rule(frozenset({Who.AUDITOR}), changes_state=True)})
    with pytest.raises(AssertionError, match="GET must not change state"):
        check_table({("GET", "/v1/x"): Rule(frozenset({Who.ADMIN}), changes_state=True)})


def test_no_state_changing_route_admits_a_read_only_role() -> None:
    for (method, path), rule in ROUTES.items():
        if rule.changes_state:
            assert Who.AUDITOR not in rule.who, f"{method} {path}"


CALLER_ORDER = ["none", "malformed", "unknown", "auditor", "introspect", "owner-a", "task-a"]


def test_the_matrix_every_route_with_every_caller(world: World) -> None:
    """Admin last (and its seal at the very end), so nothing it ends skews the others."""
    mismatches: list[str] = []
    routes = [r for r in _app_routes(world.client.app) if r != ("POST", "/v1/sys/seal")]
    for caller in [*CALLER_ORDER, "admin"]:
        for method, path in [*routes, ("POST", "/v1/sys/seal")]:
            if caller == "admin" and path == "/v1/sys/unseal":
                continue
            expected = _expected(ROUTES[(method, path)], caller)
            status = _call(world, method, path, world.tokens[caller])
            ok = {
                "pass": status not in (401, 403),
                "service": True,
                "401": status == 401,
                "403": status == 403,
                "404": status == 404,
            }[expected]
            if not ok or status >= 500:
                mismatches.append(f"{caller:10} {method} {path}: {status}, table says {expected}")
    assert not mismatches, "\n".join(mismatches)


def _state(node: Tether) -> tuple[Any, ...]:
    with node.store.read() as tx:
        leases = tx.find_leases(LeaseFilter(states=tuple(LeaseState), limit=10_000))
        tokens = tx.list_api_tokens()
        return tx.audit_head(), sorted((x.id, x.state.value) for x in leases), len(tokens)


@pytest.mark.parametrize("caller", ["auditor", "introspect", "owner-a", "none"])
def test_a_caller_changes_nothing_it_is_not_allowed_to(world: World, caller: str) -> None:
    """Every route called with an empty body by a caller the table turns away (or sends to
    validation) leaves the audit head, the leases and the tokens as they were."""
    before = _state(world.node)
    for method, path in _app_routes(world.client.app):
        rule = ROUTES[(method, path)]
        may_act = Who.ANYONE in rule.who or (_kinds(caller) & rule.who and rule.changes_state)
        if method == "GET" or (may_act and caller != "auditor"):
            continue
        _call(world, method, path, world.tokens[caller])
    assert _state(world.node) == before


def test_an_auditor_cannot_end_a_task(world: World) -> None:
    response = world.client.post(
        f"/v1/tasks/{world.task_b}/end", headers=_auth(world.tokens["auditor"])
    )
    assert response.status_code == 403
    assert "admin" in response.json()["message"]
    with world.node.store.read() as tx:
        lease = tx.get_lease(world.lease_b)
    assert lease is not None and lease.state is LeaseState.ACTIVE


def test_an_owner_ends_its_own_identities_tasks_and_no_one_elses(world: World) -> None:
    response = world.client.post(
        f"/v1/tasks/{world.task_b}/end", headers=_auth(world.tokens["owner-a"])
    )
    assert response.status_code == 404  # B's task: as if it did not exist
    response = world.client.post(
        f"/v1/tasks/{world.task_a}/end", headers=_auth(world.tokens["owner-a"])
    )
    assert response.status_code == 200
    assert response.json()["leases_revoked"] >= 1
    records = world.client.get(
        "/v1/audit", params={"limit": 10_000}, headers=_auth(world.tokens["admin"])
    ).json()["items"]
    ended = [r for r in records if r["action"] == "task.end"]
    assert ended and ended[-1]["actor"].startswith("token:")


def test_an_owner_revokes_by_lease_task_or_identity_only_what_it_owns(world: World) -> None:
    owner = _auth(world.tokens["owner-a"])
    for body in (
        {"lease": world.lease_b},
        {"task": world.task_b},
        {"identity": IDENTITY_B},
        {"owner": OWNER_B},
        {"all": True},
    ):
        response = world.client.post("/v1/leases/revoke", json=body, headers=owner)
        assert response.status_code == 403, body
    with world.node.store.read() as tx:
        lease = tx.get_lease(world.lease_b)
    assert lease is not None and lease.state is LeaseState.ACTIVE
    response = world.client.post(
        "/v1/leases/revoke", json={"identity": IDENTITY_A, "reason": "rotate"}, headers=owner
    )
    assert response.status_code == 200
    assert response.json()["revoked"] >= 1


def test_a_task_token_ends_only_its_own_task(world: World) -> None:
    token = world.tokens["task-a"]
    assert (
        world.client.post(f"/v1/tasks/{world.task_b}/end", headers=_auth(token)).status_code == 403
    )
    response = world.client.post(f"/v1/tasks/{world.task_a}/end", headers=_auth(token))
    assert response.status_code == 200 and response.json()["status"] == "ended"


# -- trusted proxies --

SOURCE_POLICY = (
    "forbid (principal, action, resource) unless "
    '{ context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };'
)


def _exchange_behind_proxy(tmp_path: Path, trusted: tuple[str, ...]) -> tuple[int, Any]:
    node = _node(tmp_path, trusted_proxies=trusted)
    try:
        with TestClient(create_app(node), client=("127.0.0.1", 40000)) as client:
            root = _init(client)
            document = estate_document(2)
            document["policies"] = [{"id": "net.cedar", "source": SOURCE_POLICY}]
            node.estate.apply(parse_estate(document), "test", document)
            node.view.reload()
            join, _ = node.issuance.create_join_token(IDENTITY_A, dt.timedelta(minutes=5), "test")
            started = node.issuance.start_task(join, "t", dt.timedelta(hours=1), "10.9.9.9")
            response = client.post(
                "/oauth2/token",
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "subject_token": started.token,
                    "subject_token_type": ACCESS_TOKEN_TYPE,
                    "audience": API_AUDIENCE,
                },
                headers={"X-Forwarded-For": "10.1.2.3"},
            )
            records = client.get("/v1/audit", params={"limit": 10_000}, headers=_auth(root)).json()[
                "items"
            ]
            return response.status_code, [r for r in records if r["action"].startswith("token.")]
    finally:
        node.stop()


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    status, sources = _exchange_behind_proxy(tmp_path, ())
    assert status == 403  # policy saw 127.0.0.1, not the forged 10.1.2.3
    assert "10.1.2.3" not in json.dumps(sources)


def test_forwarded_for_from_a_trusted_proxy_is_honoured(tmp_path: Path) -> None:
    status, sources = _exchange_behind_proxy(tmp_path, ("127.0.0.0/8",))
    assert status == 200
    assert "10.1.2.3" in json.dumps(sources)


def test_the_client_address_walks_the_chain_from_the_right() -> None:
    from tether.api._proxies import UNKNOWN, ClientAddress

    proxies = ClientAddress(["10.0.0.0/8", "192.0.2.10"])
    xff = [(b"x-forwarded-for", b"203.0.113.7, 198.51.100.1, 10.0.0.5")]
    assert proxies.resolve("192.0.2.10", xff) == "198.51.100.1"  # the client's own hop ignored
    assert proxies.resolve("198.51.100.9", xff) == "198.51.100.9"  # not a proxy: headers ignored
    forwarded = [(b"forwarded", b'for=203.0.113.7;proto=https, for="[2001:db8::1]:4711"')]
    assert proxies.resolve("10.1.1.1", forwarded) == "2001:db8::1"
    assert proxies.resolve("10.1.1.1", [(b"x-forwarded-for", b"garbage")]) == UNKNOWN
    assert ClientAddress([]).resolve("127.0.0.1", xff) == "127.0.0.1"


# -- strict JSON, bounded bodies and queries, clean 500s --


def test_duplicate_keys_are_refused_and_change_nothing(world: World) -> None:
    before = _state(world.node)
    response = world.client.post(
        "/v1/tokens",
        content=b'{"name": "x", "roles": ["admin"], "roles": ["auditor"]}',
        headers={**_auth(world.tokens["admin"]), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "duplicate key 'roles'" in response.json()["message"]
    estate = json.dumps(estate_document(2))[:-1] + ', "version": 1}'
    response = world.client.post(
        "/v1/estate/apply",
        content=estate.encode(),
        headers={**_auth(world.tokens["admin"]), "content-type": "application/json"},
    )
    assert response.status_code == 400 and "duplicate key" in response.json()["message"]
    assert _state(world.node) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (b"[" * 100 + b"]" * 100, "nested deeper than 64"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b'{"a": 1', "invalid JSON"),
    ],
)
def test_json_python_would_read_is_refused_with_400(
    world: World, body: bytes, message: str
) -> None:
    response = world.client.post(
        "/v1/tokens",
        content=body,
        headers={**_auth(world.tokens["admin"]), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_each_route_has_its_own_body_limit(world: World) -> None:
    big = b'{"name": "' + b"x" * SMALL_BODY + b'", "roles": ["auditor"]}'
    response = world.client.post(
        "/v1/tokens",
        content=big,
        headers={**_auth(world.tokens["admin"]), "content-type": "application/json"},
    )
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    # The estate's limit is larger: the same size is read and validated there.
    response = world.client.post(
        "/v1/estate/apply",
        json={"version": 1, "padding": "x" * SMALL_BODY},
        headers=_auth(world.tokens["admin"]),
    )
    assert response.status_code == 422


def test_an_unauthenticated_body_is_never_read(world: World) -> None:
    response = world.client.post(
        "/v1/estate/apply", content=b"{" * 10, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/v1/audit", "/v1/alerts"])
@pytest.mark.parametrize("after", [str(2**63), str(2**64), "-1", "1e3"])
def test_sequence_numbers_out_of_range_are_422(world: World, path: str, after: str) -> None:
    response = world.client.get(
        path, params={"after": after}, headers=_auth(world.tokens["auditor"])
    )
    assert response.status_code == 422
    assert response.json()["problems"][0]["path"].endswith("after")


def test_the_largest_sequence_number_is_served(world: World) -> None:
    response = world.client.get(
        "/v1/audit", params={"after": str(2**63 - 1)}, headers=_auth(world.tokens["auditor"])
    )
    assert response.status_code == 200 and response.json()["items"] == []


def test_a_500_is_logged_with_a_request_id_counted_and_says_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError("secret-looking detail tth_should_not_leak")

    monkeypatch.setattr(world.node, "verify_audit", broken)
    caplog.set_level(logging.INFO, logger="tether.api")
    with TestClient(world.client.app, raise_server_exceptions=False) as client:
        response = client.get("/v1/audit/verify", headers=_auth(world.tokens["auditor"]))
        assert response.status_code == 500
        body = response.json()
        assert body["error"] == "internal"
        assert "should_not_leak" not in response.text
        request_id = response.headers["x-request-id"]
        assert body["request_id"] == request_id
        logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
        assert any(r.levelname == "ERROR" for r in logged)
        assert any(getattr(r, "status", None) == 500 for r in logged)  # the access log too
        metrics = client.get("/metrics", headers=_auth(world.tokens["auditor"])).text
    assert re.search(
        r'tether_http_requests_total\{method="GET",route="/v1/audit/verify",status="500"\} 1',
        metrics,
    )


def test_not_entitled_and_no_such_profile_answer_the_same(world: World) -> None:
    """Decide before looking: a caller not entitled learns nothing of what exists."""
    token = world.tokens["task-a"]
    answers = []
    for profile in ("db-ro", "no-such-profile"):  # db-ro exists; IDENTITY_A is not entitled
        response = world.client.post(f"/v1/creds/{profile}", json={}, headers=_auth(token))
        answers.append((response.status_code, response.json()["error"]))
        assert profile in response.json()["error_description"]
    assert answers[0] == answers[1] == (403, "access_denied")


def test_a_405_lists_every_method_of_the_path(world: World) -> None:
    response = world.client.request("PUT", "/v1/credentials", headers=_auth(world.tokens["admin"]))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    response = world.client.request("PUT", "/v1/leases/revoke")
    assert response.headers["allow"] == "POST"
