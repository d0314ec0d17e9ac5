"""The API token service: creating, listing and revoking tokens, each change audited;
and naming the kind of a token that is not an API token."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os

import pytest

from tether._internal.timeutil import utcnow
from tether._internal.tokens import new_token, token_hash
from tether.audit import AuditLog
from tether.auth import (
    Authenticator,
    NotAnApiToken,
    TokenNotFound,
    TokenService,
    Unauthenticated,
    UnknownToken,
)
from tether.auth._service import TASK_LEASE_PROVIDER
from tether.issuance import TASK_PROVIDER
from tether.model import Lease, LeaseState
from tether.store import Store

ACTOR = "token:tok_root(root)"


@pytest.fixture
def tokens(store: Store, auth: Authenticator) -> TokenService:
    audit_key = os.urandom(32)
    return TokenService(store, auth, AuditLog(lambda: audit_key))


def _actions(store: Store) -> list[tuple[str, str | None, dict[str, object]]]:
    with store.read() as tx:
        return [(r.action, r.actor, json.loads(r.details)) for r in tx.list_audit(0, 100, None)]


def test_a_created_token_authenticates_and_its_creation_is_audited(
    store: Store, auth: Authenticator, tokens: TokenService
) -> None:
    token, record = tokens.create("ci-bot", ["auditor"], ACTOR, dt.timedelta(hours=1))
    assert auth.authenticate(token).roles == ("auditor",)
    assert record.created_by == ACTOR and record.expires_at is not None
    assert [r.id for r in tokens.all()] == [record.id]
    assert _actions(store) == [
        ("token.create", ACTOR, {"token_id": record.id, "name": "ci-bot", "roles": ["auditor"]})
    ]
    assert token not in json.dumps(_actions(store))


def test_a_revoked_token_is_refused_at_once_and_its_revocation_is_audited(
    store: Store, auth: Authenticator, tokens: TokenService
) -> None:
    token, record = tokens.create("ci-bot", ["admin"], ACTOR)
    assert auth.authenticate(token).is_admin  # now cached
    tokens.revoke(record.id, ACTOR)
    with pytest.raises(Unauthenticated, match="revoked"):
        auth.authenticate(token)
    assert _actions(store)[-1] == ("token.revoke", ACTOR, {"token_id": record.id})
    assert tokens.all()[0].revoked_at is not None


def test_revoking_a_token_that_is_not_active_is_not_found_and_not_audited(
    store: Store, tokens: TokenService
) -> None:
    _, record = tokens.create("ci-bot", ["admin"], ACTOR)
    tokens.revoke(record.id, ACTOR)
    for token_id in (record.id, "tok_0000000000000000"):
        with pytest.raises(TokenNotFound, match=f"no active token '{token_id}'") as raised:
            tokens.revoke(token_id, ACTOR)
        assert (raised.value.status_code, raised.value.code) == (404, "not_found")
    assert [a[0] for a in _actions(store)] == ["token.create", "token.revoke"]


# -- what kind of token was given --


def _lease_with_token(store: Store, token_key: bytes, provider: str) -> str:
    token = new_token()
    now = utcnow()
    with store.transaction() as tx:
        tx.insert_leases(
            [
                Lease(
                    id=f"lse_{provider}",
                    identity_id="nhi-1",
                    owner_id="team-a",
                    provider=provider,
                    issued_at=now,
                    expires_at=now + dt.timedelta(hours=1),
                    state=LeaseState.ACTIVE,
                    token_hash=token_hash(token_key, token),
                )
            ]
        )
    return token


def _refusal(auth: Authenticator, token: str) -> Unauthenticated:
    try:
        auth.authenticate(token)
    except Unauthenticated as refused:
        return auth.refusal(token, refused, "an API token with the admin role")
    raise AssertionError("the token was accepted")


def test_the_task_lease_provider_is_the_one_issuance_writes() -> None:
    assert TASK_LEASE_PROVIDER == TASK_PROVIDER


def test_task_and_access_tokens_are_named_by_their_lease(
    store: Store, auth: Authenticator, token_key: bytes
) -> None:
    task = _refusal(auth, _lease_with_token(store, token_key, TASK_PROVIDER))
    assert isinstance(task, NotAnApiToken) and task.status_code == 401
    assert str(task) == "this is a task token; this route needs an API token with the admin role"
    opaque = _refusal(auth, _lease_with_token(store, token_key, "token"))
    assert str(opaque).startswith("this is an access token;")


def test_a_jwt_is_named_by_its_shape(auth: Authenticator) -> None:
    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    jwt = f"{part({'alg': 'ES256', 'typ': 'JWT'})}.{part({'sub': 'x'})}.c2ln"
    assert str(_refusal(auth, jwt)).startswith("this is a JWT")
    for not_jwt in ("a.b.c", f"{part({'typ': 'JWT'})}.{part({})}.c2ln", "x" * 20_000):
        assert "malformed" in str(_refusal(auth, not_jwt))


def test_unknown_expired_and_revoked_api_tokens_keep_their_refusal(
    store: Store, auth: Authenticator, tokens: TokenService
) -> None:
    unknown = _refusal(auth, new_token())
    assert isinstance(unknown, UnknownToken) and str(unknown) == "the token is not known"
    token, record = tokens.create("ci-bot", ["admin"], ACTOR)
    tokens.revoke(record.id, ACTOR)
    assert str(_refusal(auth, token)) == "the token was revoked"
