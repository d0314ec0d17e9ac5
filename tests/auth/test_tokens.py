"""API tokens: how they are issued and stored, and who they let in with which roles.

The token format itself is tested with `tether._internal.tokens`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.clock import SettableClock
from tether._internal.timeutil import utcnow
from tether._internal.tokens import PREFIX, is_well_formed, new_token, token_hash
from tether.auth import (
    Authenticator,
    Forbidden,
    InvalidRole,
    Principal,
    Unauthenticated,
    validate_roles,
)
from tether.store import ApiTokenRecord, Store

# -- roles --


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["admin"], ("admin",)),
        (["auditor"], ("auditor",)),
        (["owner:team-a"], ("owner:team-a",)),
        (["owner:org:team.a_b@x-y"], ("owner:org:team.a_b@x-y",)),
        (["owner:" + "a" * 128], ("owner:" + "a" * 128,)),
        (["auditor", "owner:a", "auditor", "owner:b"], ("auditor", "owner:a", "owner:b")),
        (("admin",), ("admin",)),
    ],
)
def test_valid_roles_are_accepted_deduplicated_in_order(
    roles: list[str], expected: tuple[str, ...]
) -> None:
    assert validate_roles(roles) == expected


@pytest.mark.parametrize(
    ("roles", "index"),
    [
        (["root"], 0),
        (["Admin"], 0),
        (["admin", "superuser"], 1),
        (["admin", "auditor", "owner:"], 2),
        (["owner:-team"], 0),
        (["owner:team a"], 0),
        (["owner:" + "a" * 129], 0),
        (["admin "], 0),
        (["admin\n"], 0),
        (["auditor", ""], 1),
        (["owner:a", 7], 1),
        (["owner:a", None], 1),
        (["owner:team/../b"], 0),
    ],
)
def test_invalid_roles_are_refused_naming_the_index(roles: list[object], index: int) -> None:
    with pytest.raises(InvalidRole, match=rf"roles\[{index}\]"):
        validate_roles(roles)  # type: ignore[arg-type]


def test_no_roles_is_refused() -> None:
    with pytest.raises(InvalidRole, match="at least one role"):
        validate_roles([])


# -- the authenticator over every store backend --


def _issue(
    store: Store, auth: Authenticator, roles: list[str], ttl: dt.timedelta | None = None
) -> tuple[str, ApiTokenRecord]:
    with store.transaction() as tx:
        return auth.issue(tx, "ci-bot", roles, created_by="token:tok_root(root)", ttl=ttl)


def test_issue_then_authenticate(store: Store, auth: Authenticator, token_key: bytes) -> None:
    token, record = _issue(store, auth, ["owner:team-a", "auditor"])
    assert is_well_formed(token)
    assert record.id.startswith("tok_")
    assert record.roles == ("owner:team-a", "auditor")
    assert record.token_hash == token_hash(token_key, token)
    assert record.expires_at is None
    assert record.revoked_at is None

    principal = auth.authenticate(token)
    assert principal == Principal(token_id=record.id, name="ci-bot", roles=record.roles)
    assert principal.actor == f"token:{record.id}(ci-bot)"


def test_every_issued_token_is_distinct(store: Store, auth: Authenticator) -> None:
    issued = [_issue(store, auth, ["auditor"]) for _ in range(5)]
    assert len({t for t, _ in issued}) == 5
    assert len({r.id for _, r in issued}) == 5
    for token, record in issued:
        assert auth.authenticate(token).token_id == record.id


def test_issue_with_bad_roles_stores_nothing(store: Store, auth: Authenticator) -> None:
    with pytest.raises(InvalidRole, match=r"roles\[1\]"):
        _issue(store, auth, ["admin", "god"])
    with pytest.raises(InvalidRole):
        _issue(store, auth, [])
    with store.read() as tx:
        assert tx.list_api_tokens() == []


def test_the_stored_record_never_contains_the_token(
    store: Store, auth: Authenticator, tmp_path: Path
) -> None:
    token, record = _issue(store, auth, ["admin"])
    body = token[len(PREFIX) :]
    with store.read() as tx:
        (stored,) = tx.list_api_tokens()
        assert tx.api_token_by_hash(record.token_hash) == stored
    assert stored.id == record.id
    assert body not in repr(stored)
    assert body not in repr(dataclasses.astuple(stored))

    engine = getattr(store, "engine", None)
    if engine is not None:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM api_tokens")).all()
        assert len(rows) == 1
        assert body not in repr(rows)
        if engine.dialect.name == "sqlite":
            path = Path(engine.url.database or "")
            for candidate in (path, Path(f"{path}-wal")):
                if candidate.exists():
                    assert body.encode() not in candidate.read_bytes()


def test_a_token_with_an_expiry_in_the_future_is_accepted(
    store: Store, auth: Authenticator
) -> None:
    token, record = _issue(store, auth, ["auditor"], ttl=dt.timedelta(hours=1))
    assert record.expires_at is not None
    assert record.expires_at - record.created_at == dt.timedelta(hours=1)
    assert auth.authenticate(token).token_id == record.id


def test_a_token_expires_by_the_authenticator_s_clock(store: Store, token_key: bytes) -> None:
    clock = SettableClock()
    auth = Authenticator(store, lambda: token_key, clock)
    token, record = _issue(store, auth, ["auditor"], ttl=dt.timedelta(hours=1))
    assert record.created_at == clock.now
    clock.advance(minutes=59)
    assert auth.authenticate(token).token_id == record.id
    clock.advance(minutes=1)
    _assert_refused(auth, token, "expired")


def _assert_refused(auth: Authenticator, token: str | None, words: str) -> None:
    with pytest.raises(Unauthenticated, match=words) as caught:
        auth.authenticate(token)
    if token:
        assert token not in str(caught.value)
        assert token[len(PREFIX) :] not in str(caught.value)


def test_an_expired_token_is_refused(store: Store, auth: Authenticator, token_key: bytes) -> None:
    token = new_token()
    now = utcnow()
    with store.transaction() as tx:
        tx.put_api_token(
            ApiTokenRecord(
                id="tok_expired",
                token_hash=token_hash(token_key, token),
                name="old",
                roles=("admin",),
                created_at=now - dt.timedelta(days=2),
                created_by="test",
                expires_at=now - dt.timedelta(days=1),
            )
        )
    _assert_refused(auth, token, "expired")


def test_a_revoked_token_is_refused_and_others_still_work(
    store: Store, auth: Authenticator
) -> None:
    token, record = _issue(store, auth, ["admin"])
    other, _ = _issue(store, auth, ["admin"])
    with store.transaction() as tx:
        assert tx.revoke_api_token(record.id, utcnow())
    _assert_refused(auth, token, "revoked")
    assert auth.authenticate(other).is_admin


def test_unknown_missing_and_malformed_tokens_are_refused(
    store: Store, auth: Authenticator
) -> None:
    _issue(store, auth, ["admin"])
    _assert_refused(auth, None, "required")
    _assert_refused(auth, "", "required")
    _assert_refused(auth, new_token(), "not known")
    real, _ = _issue(store, auth, ["admin"])
    _assert_refused(auth, real[:-1] + ("0" if real[-1] != "0" else "1"), "malformed")
    _assert_refused(auth, real.upper(), "malformed")
    _assert_refused(auth, f"Bearer {real}", "malformed")


def test_a_token_is_refused_under_another_token_key(store: Store, auth: Authenticator) -> None:
    token, _ = _issue(store, auth, ["admin"])
    other_key = os.urandom(32)
    _assert_refused(Authenticator(store, lambda: other_key), token, "not known")


# -- principals --


def test_admin_sees_everything_and_may_administer() -> None:
    principal = Principal(token_id="tok_a", name="root", roles=("admin",))
    assert principal.is_admin
    assert principal.owner_scope() is None
    assert principal.may_see_owner("anyone")
    principal.require_admin()
    principal.require_reader()


def test_auditor_reads_everything_but_may_not_administer() -> None:
    principal = Principal(token_id="tok_b", name="audit", roles=("auditor",))
    assert not principal.is_admin
    assert principal.owner_scope() is None
    assert principal.may_see_owner("team-a")
    principal.require_reader()
    with pytest.raises(Forbidden, match="admin"):
        principal.require_admin()


def test_an_owner_sees_only_its_own_identities() -> None:
    principal = Principal(token_id="tok_c", name="team", roles=("owner:team-a", "owner:org:team-b"))
    assert principal.owned() == ("team-a", "org:team-b")
    assert principal.owner_scope() == ("team-a", "org:team-b")
    assert principal.may_see_owner("team-a")
    assert principal.may_see_owner("org:team-b")
    assert not principal.may_see_owner("team-c")
    assert not principal.may_see_owner("team")
    with pytest.raises(Forbidden):
        principal.require_admin()
    with pytest.raises(Forbidden, match="admin or auditor"):
        principal.require_reader()


def test_owner_roles_add_nothing_to_admin_or_auditor() -> None:
    both = Principal(token_id="tok_d", name="x", roles=("owner:team-a", "auditor"))
    assert both.owner_scope() is None
    both.require_reader()
    with pytest.raises(Forbidden):
        both.require_admin()


def test_a_principal_from_a_token_carries_its_roles(store: Store, auth: Authenticator) -> None:
    token, _ = _issue(store, auth, ["owner:team-a"])
    principal = auth.authenticate(token)
    assert principal.owner_scope() == ("team-a",)
    with pytest.raises(Forbidden):
        principal.require_reader()


def test_only_a_cached_api_token_is_answered_without_the_store(
    store: Store, auth: Authenticator
) -> None:
    # The HTTP layer checks tokens on its event loop only when no store read is needed;
    # an unknown well-formed token (cheap to forge) must be sent to a thread.
    with store.transaction() as tx:
        token, _ = auth.issue(tx, "ci", ["admin"], created_by="test")
    assert auth.answers_from_memory(None) and auth.answers_from_memory("not-a-token")
    assert not auth.answers_from_memory(new_token())
    assert not auth.answers_from_memory(token)  # not looked up yet
    auth.authenticate(token)
    assert auth.answers_from_memory(token)
    auth.forget_cached()
    assert not auth.answers_from_memory(token)
