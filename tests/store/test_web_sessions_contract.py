"""Dashboard sessions: recorded at sign-in, live until they expire or are ended, on every
backend; the table the migration builds is the one declared."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.store.schema import migrated
from tether.store import Store

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def test_a_session_is_live_until_it_expires_or_is_ended(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_web_session("a" * 64, "tok_1", T0 + 8 * H)
        tx.put_web_session("b" * 64, "tok_1", T0 + 8 * H)
    with store.read() as tx:
        assert tx.web_session_live("a" * 64, T0)
        assert not tx.web_session_live("a" * 64, T0 + 8 * H)  # expired
        assert not tx.web_session_live("c" * 64, T0)  # never recorded
    with store.transaction() as tx:
        assert tx.end_web_session("a" * 64, T0 + H)
        assert not tx.end_web_session("a" * 64, T0 + H)  # once
        assert not tx.end_web_session("c" * 64, T0 + H)
    with store.read() as tx:
        assert not tx.web_session_live("a" * 64, T0 + H)
        assert tx.web_session_live("b" * 64, T0 + H)  # the other session of the token


def test_an_ended_session_is_not_rolled_forward_by_a_failed_transaction(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_web_session("a" * 64, "tok_1", T0 + 8 * H)
    try:
        with store.transaction() as tx:
            tx.end_web_session("a" * 64, T0 + H)
            raise RuntimeError("the audit entry could not be written")
    except RuntimeError:
        pass
    with store.read() as tx:
        assert tx.web_session_live("a" * 64, T0 + H)


def test_sessions_long_expired_are_removed_when_a_new_one_is_recorded(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_web_session("a" * 64, "tok_1", T0)
        tx.put_web_session("b" * 64, "tok_1", T0 + 30 * H)
    with store.transaction() as tx:
        # Removed, so ending it is refused; the recent one is still there.
        assert not tx.end_web_session("a" * 64, T0 - H)
        assert tx.end_web_session("b" * 64, T0 + H)


def test_the_migration_builds_the_sessions_table_as_declared(tmp_path: Path) -> None:
    with migrated(tmp_path, "web_sessions") as (diffs, schema):
        assert diffs == []
        assert "web_sessions" in schema.get_table_names()
