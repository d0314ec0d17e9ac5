"""PostgresStaticBackend against a real, throwaway PostgreSQL cluster (no mocks).

The cluster (the `pg_cluster` session fixture from tests/conftest.py) demands SCRAM
passwords over TCP, so "refused" below means the server really refused the login. The
admin is `nhi_admin` (CREATEROLE, not superuser). Every test uses fresh role names.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.pg_cluster import PgCluster
from tether.providers import ProviderError
from tether.static import SecretUse, StaticBackend
from tether.targets import Target
from tether.targets.postgres._session import PostgresError
from tether.targets.postgres._static import (
    InvalidStaticBackend,
    PostgresStaticBackend,
    StaticUserConflict,
)

Conn = psycopg.Connection[tuple[Any, ...]]
service = pytest.mark.service
CID = "billing-db"


def _secret() -> str:
    return "Static-Secret-" + secrets.token_urlsafe(18)


@pytest.fixture
def su(pg_cluster: PgCluster) -> Iterator[Conn]:
    with pg_cluster.superuser() as conn:
        yield conn


@pytest.fixture
def names(pg_cluster: PgCluster) -> Iterator[tuple[str, str, str]]:
    """(user a, user b, group): the group may read payments.accounts, nothing else."""
    tag = secrets.token_hex(4)
    a, b, group = f"billing_{tag}_a", f"billing_{tag}_b", f"billing_{tag}_rw"
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
        ident = sql.Identifier(group)
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA payments TO {}").format(ident))
        admin.execute(sql.SQL("GRANT SELECT ON payments.accounts TO {}").format(ident))
    yield a, b, group
    with pg_cluster.superuser() as su:  # a fresh one: the test may have restarted the server
        for role in (a, b, group):
            su.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [role],
            )
            if su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def backend(pg_cluster: PgCluster, names: tuple[str, str, str]) -> PostgresStaticBackend:
    a, b, group = names
    return PostgresStaticBackend(pg_cluster.target, (a, b), grant_from=group)


def login(details: Mapping[str, str], secret: str, app: str | None = None) -> Conn:
    extra: dict[str, Any] = {} if app is None else {"application_name": app}
    return psycopg.connect(
        details["dsn"], password=secret, autocommit=True, connect_timeout=5, **extra
    )


def login_as(pg_cluster: PgCluster, user: str, secret: str) -> Conn:
    return psycopg.connect(pg_cluster.dsn(user, secret), autocommit=True, connect_timeout=5)


def refused(details: Mapping[str, str], secret: str) -> bool:
    try:
        login(details, secret).close()
    except psycopg.OperationalError:
        return True
    return False


def accounts(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM payments.accounts").fetchone()
    assert row is not None
    return int(row[0])


def alive(conn: Conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def role_row(su: Conn, role: str) -> tuple[Any, ...] | None:
    """Everything about a role that staging the other one must leave alone."""
    return su.execute(
        "SELECT rolcanlogin, rolpassword, rolvaliduntil::text,"
        " shobj_description(oid, 'pg_authid') FROM pg_authid WHERE rolname = %s",
        [role],
    ).fetchone()


def admin_memberships(su: Conn, pg_cluster: PgCluster) -> list[tuple[Any, ...]]:
    return su.execute(
        "SELECT m.roleid::regrole::text, m.grantor::regrole::text FROM pg_auth_members m"
        " WHERE m.member = %s::regrole ORDER BY 1, 2",
        [pg_cluster.admin_user],
    ).fetchall()


def callers(uses: object) -> list[str]:
    assert isinstance(uses, list | tuple)
    assert all(isinstance(u, SecretUse) for u in uses)
    return [u.caller for u in uses]


# -- the version rule and configuration (no server needed) --------------------------------


def _offline() -> Target:
    return Target("billing", "postgres", "postgresql://nhi_admin:Admin-Pw-123@127.0.0.1:1/appdb")


def test_odd_versions_use_the_first_user_and_even_versions_the_second() -> None:
    backend = PostgresStaticBackend(_offline(), ("billing_a", "billing_b"))
    assert backend.kind == "postgres-static"
    assert isinstance(backend, PostgresStaticBackend)
    _: StaticBackend = backend  # satisfies the protocol (checked by mypy)
    assert [backend.user_for(v) for v in range(1, 6)] == [
        "billing_a",
        "billing_b",
        "billing_a",
        "billing_b",
        "billing_a",
    ]
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="version"):
            backend.user_for(bad)


@pytest.mark.parametrize(
    ("users", "grant_from", "message"),
    [
        (("billing_a", "billing_a"), None, "must differ"),
        (("", "billing_b"), None, "users\\[0\\]"),
        (("billing_a", "x" * 64), None, "users\\[1\\]"),
        (("billing_a", "bad\x00name"), None, "users\\[1\\]"),
        (("tether_billing_a", "billing_b"), None, "reserves"),
        (("billing_a",), None, "exactly two"),
        (("billing_a", "billing_b"), "billing_b", "grant_from"),
        (("billing_a", "billing_b"), "tether_group", "grant_from"),
    ],
)
def test_bad_configuration_is_refused(users: Any, grant_from: str | None, message: str) -> None:
    with pytest.raises(InvalidStaticBackend, match=message):
        PostgresStaticBackend(_offline(), users, grant_from=grant_from)


def test_repr_names_the_target_not_its_dsn() -> None:
    backend = PostgresStaticBackend(_offline(), ("billing_a", "billing_b"))
    assert "Admin-Pw-123" not in repr(backend)
    assert "billing" in repr(backend)


# -- the rotation --------------------------------------------------------------------------


@service
def test_full_rotation_with_two_consumers(
    backend: PostgresStaticBackend,
    names: tuple[str, str, str],
    pg_cluster: PgCluster,
    su: Conn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    user_a, user_b, _ = names
    s1, s2, s3 = _secret(), _secret(), _secret()
    memberships = admin_memberships(su, pg_cluster)

    # Version 1 on users[0]; consumer A connects with it.
    d1 = backend.stage(CID, 1, s1)
    assert d1["username"] == user_a
    assert d1["host"] == pg_cluster.host
    assert d1["port"] == str(pg_cluster.port)
    assert d1["dbname"] == pg_cluster.dbname
    assert s1 not in d1["dsn"]
    assert d1["dsn"].startswith(f"postgresql://{user_a}@")
    backend.test(CID, 1, s1, d1)
    consumer_a = login(d1, s1, app="consumer-a")
    assert accounts(consumer_a) == 3

    # Version 2 on users[1]: staging it leaves users[0] exactly as it was.
    before = role_row(su, user_a)
    d2 = backend.stage(CID, 2, s2)
    assert d2["username"] == user_b
    backend.test(CID, 2, s2, d2)
    assert role_row(su, user_a) == before

    # The overlap: A keeps working and version 1 still logs in.
    assert accounts(consumer_a) == 3
    login(d1, s1).close()
    uses = backend.users_of(CID, 1, d1)
    assert callers(uses) == [
        f"127.0.0.1 app=consumer-a pid={consumer_a.info.backend_pid}",
    ]
    assert uses[0].details["application_name"] == "consumer-a"
    assert uses[0].details["pid"] == str(consumer_a.info.backend_pid)
    assert uses[0].details["client_addr"] == "127.0.0.1"
    assert uses[0].details["username"] == user_a

    # B moves to version 2 within the overlap.
    consumer_b = login(d2, s2, app="consumer-b")
    assert accounts(consumer_b) == 3
    assert callers(backend.users_of(CID, 2, d2)) == [
        f"127.0.0.1 app=consumer-b pid={consumer_b.info.backend_pid}"
    ]
    assert "consumer-b" not in " ".join(callers(backend.users_of(CID, 1, d1)))

    # The overlap ends: version 1 is retired. A's session ends, B's goes on.
    backend.retire(CID, 1, d1)
    assert not alive(consumer_a)
    consumer_a.close()
    assert refused(d1, s1)
    assert accounts(consumer_b) == 3
    assert backend.users_of(CID, 1, d1) == []
    locked = role_row(su, user_a)
    assert locked is not None  # the role stays for version 3
    assert locked[0] is False
    assert locked[2] == "-infinity"
    # Seeing and ending A's session borrowed a membership only for a rolled-back moment.
    assert admin_memberships(su, pg_cluster) == memberships

    # Version 3 returns to users[0] with a new password; the old one stays dead.
    d3 = backend.stage(CID, 3, s3)
    assert d3["username"] == user_a
    backend.test(CID, 3, s3, d3)
    assert refused(d3, s1)
    with login(d3, s3) as again:
        assert accounts(again) == 3  # the group's privileges came back with the role
    assert accounts(consumer_b) == 3  # staging v3 did not touch users[1]
    consumer_b.close()

    for secret in (s1, s2, s3, pg_cluster.admin_password):
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in repr(record.__dict__)


@service
def test_stage_creates_roles_with_clean_attributes_and_the_group(
    backend: PostgresStaticBackend, names: tuple[str, str, str], su: Conn
) -> None:
    user_a, _, group = names
    backend.stage(CID, 1, _secret())
    row = su.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
        " rolbypassrls, rolvaliduntil::text, pg_has_role(oid, %s, 'USAGE'),"
        " shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
        [group, user_a],
    ).fetchone()
    assert row is not None
    assert row[:8] == (True, False, False, False, False, False, "infinity", True)
    assert row[8].startswith("tether static version=1 ")
    assert row[8].endswith(f" credential={CID}")
    # The stored verifier is SCRAM, made on the client side.
    verifier = su.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [user_a])
    assert str(verifier.fetchone()[0]).startswith("SCRAM-SHA-256$")  # type: ignore[index]


@service
def test_stage_adopts_an_existing_locked_role(
    backend: PostgresStaticBackend, names: tuple[str, str, str], pg_cluster: PgCluster, su: Conn
) -> None:
    user_a, _, _ = names
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN VALID UNTIL '2001-01-01'").format(
                sql.Identifier(user_a)
            )
        )
    secret = _secret()
    details = backend.stage(CID, 1, secret)
    backend.test(CID, 1, secret, details)
    row = role_row(su, user_a)
    assert row is not None
    assert row[0] is True
    assert row[2] == "infinity"
    with login(details, secret) as conn:
        assert accounts(conn) == 3


@service
def test_stage_test_retire_and_users_of_are_idempotent(
    backend: PostgresStaticBackend, names: tuple[str, str, str], su: Conn
) -> None:
    user_a, user_b, _ = names
    # Nothing staged yet: retiring or asking about a version is a no-op.
    backend.retire(CID, 2, {})
    assert backend.users_of(CID, 2, {}) == ()
    assert su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user_b]).fetchone() is None

    secret = _secret()
    first = backend.stage(CID, 1, secret)
    comment = role_row(su, user_a)
    assert backend.stage(CID, 1, secret) == first
    assert role_row(su, user_a)[3] == comment[3]  # type: ignore[index]  # same staged_at
    backend.test(CID, 1, secret, first)
    backend.test(CID, 1, secret, first)
    with login(first, secret) as conn:
        assert accounts(conn) == 3
    backend.retire(CID, 1, first)
    backend.retire(CID, 1, first)
    assert refused(first, secret)
    assert backend.users_of(CID, 1, first) == []


@service
def test_a_wrong_secret_fails_the_test_without_leaking(backend: PostgresStaticBackend) -> None:
    details = backend.stage(CID, 1, _secret())
    wrong = _secret()
    with pytest.raises(ProviderError) as caught:
        backend.test(CID, 1, wrong, details)
    assert isinstance(caught.value, PostgresError)
    assert "cannot connect (OperationalError)" in str(caught.value)
    _assert_no_leak(caught.value, wrong)


# -- late, repeated and conflicting calls -------------------------------------------------


@service
def test_a_second_rotation_inside_the_overlap(
    backend: PostgresStaticBackend, names: tuple[str, str, str], su: Conn
) -> None:
    """The service stages N before retiring N-2 (only one old version is ever valid):
    N-2's sessions stay attributed to N-2 and are the only ones its retire ends."""
    user_a, _, _ = names
    s1, s2, s3 = _secret(), _secret(), _secret()
    d1 = backend.stage(CID, 1, s1)
    old = login(d1, s1, app="old-consumer")
    d2 = backend.stage(CID, 2, s2)
    d3 = backend.stage(CID, 3, s3)  # version 1 is still "previous" here
    assert d3["username"] == user_a
    assert refused(d1, s1)  # its password is gone ...
    assert alive(old)  # ... its session is not, yet
    new = login(d3, s3, app="new-consumer")
    assert callers(backend.users_of(CID, 1, d1)) == [
        f"127.0.0.1 app=old-consumer pid={old.info.backend_pid}"
    ]
    backend.retire(CID, 1, d1)  # ends what version 1 opened, nothing of version 3
    assert not alive(old)
    old.close()
    assert accounts(new) == 3
    assert role_row(su, user_a)[0] is True  # type: ignore[index]
    backend.test(CID, 3, s3, d3)
    assert backend.users_of(CID, 1, d1) == []
    backend.retire(CID, 1, d1)
    assert alive(new)
    new.close()
    # A version that never reached the role: nothing to retire, nobody using it.
    backend.retire(CID, 5, {})
    assert backend.users_of(CID, 5, {}) == ()
    login(d3, s3).close()
    assert d2["username"] != d3["username"]


@service
def test_staging_an_older_version_than_the_role_carries_is_refused(
    backend: PostgresStaticBackend,
) -> None:
    s3 = _secret()
    backend.stage(CID, 1, _secret())
    d3 = backend.stage(CID, 3, s3)
    with pytest.raises(StaticUserConflict, match="older version 1"):
        backend.stage(CID, 1, _secret())
    backend.test(CID, 3, s3, d3)  # v3's password is untouched


@service
def test_a_role_held_by_another_credential_is_refused(
    backend: PostgresStaticBackend, pg_cluster: PgCluster, names: tuple[str, str, str]
) -> None:
    secret = _secret()
    details = backend.stage(CID, 1, secret)
    other = PostgresStaticBackend(pg_cluster.target, names[:2])
    for call in (
        lambda: other.stage("someone-else", 1, _secret()),
        lambda: other.retire("someone-else", 1, details),
        lambda: other.users_of("someone-else", 1, details),
    ):
        with pytest.raises(StaticUserConflict, match="held by static credential"):
            call()
    backend.test(CID, 1, secret, details)
    # Reordered users: version 1 would now land on the role that carries version 1 ...
    swapped = PostgresStaticBackend(pg_cluster.target, (names[1], names[0]))
    backend.stage(CID, 2, _secret())
    with pytest.raises(StaticUserConflict, match="reordered"):
        swapped.stage(CID, 1, _secret())
    # ... and details that name another role than the version maps to are refused.
    with pytest.raises(StaticUserConflict, match="reordered"):
        swapped.retire(CID, 1, details)
    backend.test(CID, 1, secret, details)


@service
def test_the_admin_role_itself_is_never_managed(pg_cluster: PgCluster) -> None:
    backend = PostgresStaticBackend(pg_cluster.target, (pg_cluster.admin_user, "billing_zz_b"))
    with pytest.raises(StaticUserConflict, match="administers"):
        backend.stage(CID, 1, _secret())
    with pytest.raises(StaticUserConflict, match="administers"):
        backend.retire(CID, 1, {})
    with psycopg.connect(pg_cluster.admin_dsn, connect_timeout=5) as conn:
        conn.execute("SELECT 1")


@service
def test_a_missing_group_fails_the_stage_and_creates_nothing(
    pg_cluster: PgCluster, names: tuple[str, str, str], su: Conn
) -> None:
    backend = PostgresStaticBackend(pg_cluster.target, names[:2], grant_from="no_such_group")
    with pytest.raises(StaticUserConflict, match="no_such_group"):
        backend.stage(CID, 1, _secret())
    assert su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [names[0]]).fetchone() is None


@service
def test_a_superuser_admin_works_too(pg_cluster: PgCluster, names: tuple[str, str, str]) -> None:
    target = Target("su", "postgres", pg_cluster.superuser_dsn)
    backend = PostgresStaticBackend(target, names[:2], grant_from=names[2])
    secret = _secret()
    details = backend.stage(CID, 1, secret)
    backend.test(CID, 1, secret, details)
    conn = login(details, secret, app="su-consumer")
    assert callers(backend.users_of(CID, 1, details)) == [
        f"127.0.0.1 app=su-consumer pid={conn.info.backend_pid}"
    ]
    backend.retire(CID, 1, details)
    assert not alive(conn)
    conn.close()


@service
def test_an_admin_that_cannot_borrow_the_role_still_names_callers(
    backend: PostgresStaticBackend, pg_cluster: PgCluster, names: tuple[str, str, str], su: Conn
) -> None:
    """Without CREATEROLE (or, from 16 on, ADMIN OPTION) the admin sees no client address:
    users_of degrades to pid and application_name; retire is an error, never a no-op."""
    weak, password = f"weak_{secrets.token_hex(4)}", _secret()
    su.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(weak), sql.Literal(password)
        )
    )
    try:
        secret = _secret()
        details = backend.stage(CID, 1, secret)
        consumer = login(details, secret, app="hidden-consumer")
        limited = PostgresStaticBackend(
            Target("weak", "postgres", pg_cluster.dsn(weak, password)), names[:2]
        )
        uses = limited.users_of(CID, 1, details)
        assert callers(uses) == [f"unknown app=hidden-consumer pid={consumer.info.backend_pid}"]
        assert "backend_start" not in uses[0].details
        with pytest.raises(ProviderError) as caught:
            limited.retire(CID, 1, details)
        _assert_no_leak(caught.value, password)
        assert alive(consumer)
        consumer.close()
    finally:
        su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(weak)))


# -- failures ------------------------------------------------------------------------------


def _assert_no_leak(exc: BaseException, *secrets_: str) -> None:
    rendered = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for secret in secrets_:
        for text in rendered:
            assert secret not in text


@service
def test_a_stopped_cluster_is_a_provider_error_without_secrets(
    backend: PostgresStaticBackend, pg_cluster: PgCluster
) -> None:
    secret = _secret()
    details = backend.stage(CID, 1, secret)
    new_secret = _secret()
    calls: list[Callable[[], object]] = [
        lambda: backend.stage(CID, 2, new_secret),
        lambda: backend.test(CID, 1, secret, details),
        lambda: backend.retire(CID, 1, details),
        lambda: backend.users_of(CID, 1, details),
    ]
    with pg_cluster.stopped():
        for call in calls:
            with pytest.raises(ProviderError) as caught:
                call()
            assert isinstance(caught.value, PostgresError)
            assert caught.value.error == "OperationalError"
            assert caught.value.__cause__ is None
            _assert_no_leak(
                caught.value, secret, new_secret, pg_cluster.admin_password, backend.target.dsn
            )
        assert pg_cluster.admin_password not in repr(backend)
    # Once the server is back, the retried retire does its job.
    backend.retire(CID, 1, details)
    assert refused(details, secret)
