"""What a newcomer is told when they reach for the wrong thing: a server never
initialized, and a token of the wrong kind where an API token is needed."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import estate_document
from tether._internal.tokens import new_token
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.issuance import ExchangeRequest
from tether.providers import ACCESS_TOKEN_TYPE

IDENTITY = "nhi-00000"
ADMIN_ONLY = "an API token with the admin role"


def _node(tmp_path: Path) -> Tether:
    return Tether(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 't.db'}"))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- a server never initialized --


def test_a_server_never_initialized_says_to_run_init_not_to_unseal(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with TestClient(create_app(node)) as client:
        response = client.get("/v1/identities", headers=_auth(new_token()))
        assert response.status_code == 503
        assert response.json()["error"] == "sealed"
        message = response.json()["message"]
        assert "not initialized" in message and "`tether init`" in message
        assert "unseal" not in message
    node.stop()


def test_an_initialized_sealed_server_still_says_to_unseal(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with TestClient(create_app(node)) as client:
        client.post("/v1/sys/init", json={"shares": 1, "threshold": 1})  # seals after
        response = client.get("/v1/identities", headers=_auth(new_token()))
        assert response.status_code == 503
        assert "unseal it with `tether unseal`" in response.json()["message"]
        assert "not initialized" not in response.json()["message"]
    node.stop()


# -- a token of another kind where an API token is needed --


@dataclass
class Tokens:
    client: TestClient
    root: str
    auditor: str
    task: str
    task_id: str
    opaque: str
    jwt: str


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[Tokens]:
    node = _node(tmp_path)
    with TestClient(create_app(node)) as client:
        init = client.post("/v1/sys/init", json={"shares": 1, "threshold": 1}).json()
        client.post("/v1/sys/unseal", json={"share": init["shares"][0]})
        root = init["root_token"]
        auditor = client.post(
            "/v1/tokens", json={"name": "a", "roles": ["auditor"]}, headers=_auth(root)
        ).json()["token"]
        document = estate_document(2)
        document["profiles"].append(
            {"id": "opaque-api", "provider": "token", "scopes": ["push"], "max_ttl": "1h"}
        )
        document["identities"][0]["entitlements"].append({"profile": "opaque-api"})
        node.estate.apply(parse_estate(document), "test", document)
        node.view.reload()
        join, _ = node.issuance.create_join_token(IDENTITY, dt.timedelta(minutes=5), "test")
        started = node.issuance.start_task(join, "build", dt.timedelta(hours=1), None)

        def exchange(audience: str) -> str:
            request = ExchangeRequest(
                subject_token=started.token,
                subject_token_type=ACCESS_TOKEN_TYPE,
                audience=audience,
            )
            return node.issuance.exchange(request).access_token

        yield Tokens(
            client,
            root,
            auditor,
            started.token,
            started.task.id,
            exchange("opaque-api"),
            exchange("https://api.example.com"),
        )
    node.stop()


def _refusal(t: Tokens, token: str, method: str = "GET", path: str = "/v1/tokens") -> str:
    response = t.client.request(method, path, headers=_auth(token))
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthenticated"
    return str(response.json()["message"])


def test_a_task_token_on_an_admin_route_is_named_and_the_api_token_asked_for(
    tokens: Tokens,
) -> None:
    message = _refusal(tokens, tokens.task)
    assert message == f"this is a task token; this route needs {ADMIN_ONLY}"
    assert tokens.task not in message


def test_an_issued_access_token_on_an_admin_route_is_named(tokens: Tokens) -> None:
    assert (
        _refusal(tokens, tokens.opaque) == f"this is an access token; this route needs {ADMIN_ONLY}"
    )


def test_a_jwt_on_an_admin_route_is_named(tokens: Tokens) -> None:
    message = _refusal(tokens, tokens.jwt)
    assert message.startswith("this is a JWT (an attestation token or an access token)")
    assert message.endswith(f"this route needs {ADMIN_ONLY}")


def test_the_roles_a_route_admits_are_the_ones_asked_for(tokens: Tokens) -> None:
    message = _refusal(tokens, tokens.task, path="/v1/identities")
    assert message == (
        "this is a task token; this route needs an API token with the admin or auditor "
        "or owner:<id> role"
    )


def test_a_jwt_where_a_task_token_would_do_asks_for_either(tokens: Tokens) -> None:
    message = _refusal(tokens, tokens.jwt, "POST", f"/v1/tasks/{tokens.task_id}/end")
    assert message.endswith(
        "this route needs a task token or an API token with the admin or owner:<id> role"
    )


def test_unknown_and_malformed_tokens_are_answered_as_before(tokens: Tokens) -> None:
    assert _refusal(tokens, new_token()) == "the token is not known"
    assert _refusal(tokens, "not-a-token") == "the token is malformed or its checksum is wrong"
    assert _refusal(tokens, "a.b.c") == "the token is malformed or its checksum is wrong"


def test_a_jwt_shaped_bearer_with_a_deeply_nested_header_is_refused_not_a_500(
    tokens: Tokens,
) -> None:
    # The kind of token is named by parsing its header: nesting deep enough to exhaust
    # the parser must still be a plain 401, never an unhandled error.
    header = base64.urlsafe_b64encode(b"[" * 9000).rstrip(b"=").decode()
    message = _refusal(tokens, f"{header}.e30.c2ln")
    assert message == "the token is malformed or its checksum is wrong"


def test_an_api_token_without_the_role_is_still_forbidden(tokens: Tokens) -> None:
    response = tokens.client.get("/v1/tokens", headers=_auth(tokens.auditor))
    assert response.status_code == 403
    assert response.json()["message"] == "this needs admin; the token has auditor"


def test_the_task_token_still_reaches_the_routes_it_is_for(tokens: Tokens) -> None:
    response = tokens.client.post(f"/v1/tasks/{tokens.task_id}/end", headers=_auth(tokens.task))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ended"
    # Ended, it is still a task token: named so, and still not an API token.
    assert _refusal(tokens, tokens.task).startswith("this is a task token;")
