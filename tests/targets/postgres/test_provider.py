"""PostgresProvider against a real, throwaway PostgreSQL cluster (no mocks).

The cluster demands SCRAM passwords over TCP, so "refused" below means the server really
refused the login. One cluster (the `pg_cluster` session fixture, registered in
tests/conftest.py) serves the whole run; every test uses fresh lease ids.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.pg_cluster import PgCluster
from tether.model import Lease, LeaseState, Profile
from tether.providers import OBJECT_PREFIX, IssuedCredential, ProviderError
from tether.targets import Target
from tether.targets.postgres._provider import (
    TOKEN_TYPE,
    InvalidGrants,
    PostgresError,
    PostgresProvider,
    parse_grants,
    role_name,
)

pytestmark = pytest.mark.service

PAYMENTS_RO = Profile(
    id="payments-db-ro",
    provider="postgres",
    max_ttl=dt.timedelta(hours=1),
    target="payments-db",
    grants={"schema": "payments", "privileges": ["SELECT"]},
)

Conn = psycopg.Connection[tuple[Any, ...]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_lease(lease_id: str | None = None, ttl: dt.timedelta = dt.timedelta(hours=1)) -> Lease:
    now = _now()
    return Lease(
        id=f"lse_{secrets.token_hex(10)}" if lease_id is None else lease_id,
        identity_id="payments-deployer",
        owner_id="team-payments",
        provider="postgres",
        issued_at=now,
        expires_at=now + ttl,
        state=LeaseState.PENDING,
        profile_id=PAYMENTS_RO.id,
    )


def login(cred: IssuedCredential, *, autocommit: bool = True) -> Conn:
    return psycopg.connect(
        cred.extra["dsn"], password=cred.secret, autocommit=autocommit, connect_timeout=5
    )


@pytest.fixture
def provider(pg_cluster: PgCluster) -> PostgresProvider:
    return PostgresProvider(pg_cluster.target)


@pytest.fixture
def su(pg_cluster: PgCluster) -> Iterator[Conn]:
    with pg_cluster.superuser() as conn:
        yield conn


@pytest.fixture
def issue(provider: PostgresProvider) -> Iterator[Callable[..., tuple[Lease, IssuedCredential]]]:
    """Issue for a fresh lease; whatever a test leaves behind is revoked afterwards."""
    leases: list[Lease] = []

    def _issue(
        profile: Profile | None = PAYMENTS_RO, lease: Lease | None = None
    ) -> tuple[Lease, IssuedCredential]:
        lease = lease or make_lease()
        leases.append(lease)
        return lease, provider.issue(lease, None, profile)  # type: ignore[arg-type]

    yield _issue
    for lease in leases:
        provider.revoke(lease)


def role_exists(su: Conn, role: str) -> bool:
    return su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None


def profile_with(grants: Any) -> Profile:
    return replace(PAYMENTS_RO, grants=grants)


# -- issue ---------------------------------------------------------------------------------


def test_issued_credential_connects_and_reads_payments(issue: Any, pg_cluster: PgCluster) -> None:
    lease, cred = issue()
    assert cred.token_type == TOKEN_TYPE
    assert len(cred.secret) >= 32
    assert cred.token_hash is None
    extra = cred.extra
    assert extra["username"] == role_name(lease.id) == OBJECT_PREFIX + lease.id
    assert (extra["host"], extra["port"], extra["dbname"]) == (
        pg_cluster.host,
        pg_cluster.port,
        pg_cluster.dbname,
    )
    assert dt.datetime.fromisoformat(extra["valid_until"]) == lease.expires_at
    assert extra["dsn"] == (
        f"postgresql://{extra['username']}@{pg_cluster.host}:{pg_cluster.port}/appdb"
    )
    assert cred.secret not in repr(extra)
    with login(cred) as conn:
        rows = conn.execute("SELECT holder FROM payments.accounts ORDER BY id").fetchall()
        assert rows == [("ada",), ("bob",), ("cy",)]
        assert conn.execute("SELECT current_user").fetchone() == (extra["username"],)


def test_issued_credential_cannot_write(issue: Any) -> None:
    _, cred = issue()
    with login(cred) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO payments.ledger VALUES (1, 'sneaky')")


def test_issued_credential_cannot_read_another_schema(issue: Any) -> None:
    _, cred = issue()
    with login(cred) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM other.secrets")


def test_password_reaches_the_server_only_as_a_scram_verifier(issue: Any, su: Conn) -> None:
    lease, cred = issue()
    row = su.execute(
        "SELECT rolpassword, rolcanlogin, rolsuper, rolcreaterole FROM pg_authid"
        " WHERE rolname = %s",
        [role_name(lease.id)],
    ).fetchone()
    assert row is not None
    stored, can_login, superuser, createrole = row
    assert stored.startswith("SCRAM-SHA-256$")
    assert cred.secret not in stored
    assert (can_login, superuser, createrole) == (True, False, False)


def test_table_list_limits_the_grant(issue: Any) -> None:
    _, cred = issue(
        profile_with({"schema": "payments", "privileges": ["select"], "tables": ["accounts"]})
    )
    with login(cred) as conn:
        assert conn.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM payments.ledger")


def test_several_privileges_and_schemas(issue: Any) -> None:
    grants = [
        {"schema": "payments", "privileges": ["SELECT", "INSERT", "DELETE"], "tables": ["ledger"]},
        {"schema": "other", "privileges": ["SELECT"]},
    ]
    _, cred = issue(profile_with(grants))
    with login(cred) as conn:
        conn.execute("INSERT INTO payments.ledger VALUES (42, 'allowed')")
        conn.execute("DELETE FROM payments.ledger WHERE id = 42")
        assert conn.execute("SELECT count(*) FROM other.secrets").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE payments.ledger SET note = 'no'")


def test_default_grants_are_read_only_on_public(issue: Any, pg_cluster: PgCluster) -> None:
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS public.motd (line text)")
    _, cred = issue(profile=None)
    with login(cred) as conn:
        assert conn.execute("SELECT count(*) FROM public.motd").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO public.motd VALUES ('hi')")
    with login(cred) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM payments.accounts")


def test_issue_retried_after_a_crash_replaces_the_role(issue: Any) -> None:
    lease, first = issue()
    stale = login(first)
    _, second = issue(lease=lease)
    assert second.secret != first.secret
    with pytest.raises(psycopg.OperationalError):
        stale.execute("SELECT 1")
    stale.close()
    with pytest.raises(psycopg.OperationalError):
        login(first)
    with login(second) as conn:
        assert conn.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)


def test_missing_schema_fails_the_issuance_and_leaves_no_role(
    provider: PostgresProvider, su: Conn
) -> None:
    lease = make_lease()
    with pytest.raises(PostgresError) as caught:
        provider.issue(lease, None, profile_with({"schema": "nope", "privileges": ["SELECT"]}))  # type: ignore[arg-type]
    assert caught.value.sqlstate == "3F000"  # invalid_schema_name
    assert not role_exists(su, role_name(lease.id))


# -- grants validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grants", "path"),
    [
        ({"schema": "payments", "privileges": ["SELECT", "DROP"]}, "grants.privileges[1]"),
        ({"schema": "payments", "privileges": ["ALL"]}, "grants.privileges[0]"),
        ({"schema": "payments", "privileges": ["SELECT; DROP ROLE x"]}, "grants.privileges[0]"),
        ({"schema": "payments", "privileges": "SELECT"}, "grants.privileges"),
        ({"schema": "payments", "privileges": []}, "grants.privileges"),
        ({"privileges": ["SELECT"]}, "grants.schema"),
        ({"schema": "x" * 64, "privileges": ["SELECT"]}, "grants.schema"),
        ({"schema": "payments", "privileges": ["SELECT"], "tables": []}, "grants.tables"),
        ({"schema": "payments", "privileges": ["SELECT"], "table": ["a"]}, "grants: unknown"),
        ([{"schema": "payments", "privileges": ["SELECT"]}, {"schema": 1}], "grants[1].schema"),
        ([], "grants:"),
        ("SELECT", "grants:"),
    ],
)
def test_invalid_grants_are_refused_with_their_path(grants: Any, path: str) -> None:
    with pytest.raises(InvalidGrants) as caught:
        parse_grants(grants)
    assert str(caught.value).startswith(path)


def test_unknown_privilege_is_refused_before_the_target_is_touched(
    provider: PostgresProvider, su: Conn
) -> None:
    lease = make_lease()
    with pytest.raises(InvalidGrants, match="unknown privilege 'DROP'"):
        provider.issue(lease, None, profile_with({"schema": "payments", "privileges": ["DROP"]}))  # type: ignore[arg-type]
    assert not role_exists(su, role_name(lease.id))


# -- revoke --------------------------------------------------------------------------------


def test_revoke_ends_open_sessions_and_refuses_new_logins(
    provider: PostgresProvider, issue: Any, su: Conn
) -> None:
    lease, cred = issue()
    conn = login(cred)
    assert conn.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)
    provider.revoke(lease)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        login(cred)
    assert not role_exists(su, role_name(lease.id))


def test_revoke_terminates_a_session_inside_a_running_transaction(
    provider: PostgresProvider, issue: Any, su: Conn
) -> None:
    """Proves, without measuring anything, that neither an open transaction holding locks
    (and owning a temp table) nor a statement in progress keeps a revoked role alive."""
    lease, cred = issue()
    idle_in_tx = login(cred, autocommit=False)
    idle_in_tx.execute("SELECT * FROM payments.accounts")  # holds its lock until commit
    idle_in_tx.execute("CREATE TEMP TABLE scratch AS SELECT * FROM payments.accounts")
    busy = login(cred, autocommit=False)
    busy_pid = busy.info.backend_pid
    outcome: list[BaseException | None] = []

    def long_query() -> None:
        try:
            busy.execute("SELECT pg_sleep(120)")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=long_query, daemon=True)
    worker.start()
    # Wait (event, not time) until the statement is really running on the server.
    for _ in range(1000):
        row = su.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [busy_pid]).fetchone()
        if row == ("active",):
            break
        threading.Event().wait(0.01)
    assert row == ("active",)

    provider.revoke(lease)

    worker.join(timeout=60)  # a hang guard, not a timing assertion
    assert len(outcome) == 1
    assert isinstance(outcome[0], psycopg.OperationalError)
    with pytest.raises(psycopg.OperationalError):
        idle_in_tx.execute("SELECT 1")
    idle_in_tx.close()
    busy.close()
    assert not role_exists(su, role_name(lease.id))
    row = su.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [busy_pid]).fetchone()
    assert row == (0,)


def test_revoke_is_idempotent_and_accepts_a_role_that_never_existed(
    provider: PostgresProvider, issue: Any, su: Conn
) -> None:
    lease, _ = issue()
    provider.revoke(lease)
    provider.revoke(lease)
    provider.revoke(make_lease())  # never issued
    provider.revoke(make_lease("Never-Issued/odd id"))
    assert not role_exists(su, role_name(lease.id))


# -- renew and expiry ----------------------------------------------------------------------


def test_renew_moves_valid_until(provider: PostgresProvider, issue: Any, su: Conn) -> None:
    lease, cred = issue(lease=make_lease(ttl=dt.timedelta(minutes=10)))

    def valid_until() -> dt.datetime:
        row = su.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", [cred.extra["username"]]
        ).fetchone()
        assert row is not None
        value: dt.datetime = row[0]
        return value

    assert valid_until() == lease.expires_at
    renewed = replace(lease, expires_at=lease.expires_at + dt.timedelta(hours=2))
    provider.renew(renewed)
    assert valid_until() == renewed.expires_at
    with login(cred) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_renew_of_a_missing_role_is_an_error(provider: PostgresProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        provider.renew(make_lease())
    assert isinstance(caught.value, PostgresError)
    assert caught.value.sqlstate == "42704"  # undefined_object


def test_expired_valid_until_refuses_login(provider: PostgresProvider, issue: Any) -> None:
    lease, cred = issue()
    with login(cred):
        pass
    provider.renew(replace(lease, expires_at=_now() - dt.timedelta(minutes=1)))
    with pytest.raises(psycopg.OperationalError):
        login(cred)
    _, born_expired = issue(lease=make_lease(ttl=-dt.timedelta(seconds=1)))
    with pytest.raises(psycopg.OperationalError):
        login(born_expired)


# -- reconcile -----------------------------------------------------------------------------


def test_reconcile_drops_prefixed_roles_without_a_live_lease(
    provider: PostgresProvider, issue: Any, su: Conn, pg_cluster: PgCluster
) -> None:
    live_odd = make_lease("Live/Lease:" + "x" * 80)  # hashed name: maps back via its comment
    live, _ = issue(lease=live_odd)
    live_plain, _ = issue()
    dead, dead_cred = issue()
    dead_odd, _ = issue(lease=make_lease("Dead Lease #7"))
    dead_session = login(dead_cred)
    tag = secrets.token_hex(4)
    strangers = [f"app_reader_{tag}", f"tetherx{tag}", f"tether{tag}", f"Tether_{tag}"]
    impostors = [f"{OBJECT_PREFIX}manual_{tag}", f"{OBJECT_PREFIX}odd__{tag}"]
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
        for role in strangers + impostors:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    asked: list[str] = []

    def live_lease_ids(ids: Sequence[str]) -> set[str]:
        asked.extend(ids)
        return {live.id, live_plain.id} & set(ids)

    try:
        dropped = provider.reconcile(live_lease_ids)
    finally:
        with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
            for role in strangers + impostors:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    expected = {role_name(dead.id), role_name(dead_odd.id), *impostors}
    assert expected <= set(dropped)
    assert all(name.startswith(OBJECT_PREFIX) for name in dropped)
    assert {live.id, live_plain.id, dead.id, dead_odd.id} <= set(asked)
    assert role_exists(su, role_name(live.id))
    assert role_exists(su, role_name(live_plain.id))
    for role in expected:
        assert not role_exists(su, role)
    with pytest.raises(psycopg.OperationalError):
        dead_session.execute("SELECT 1")
    dead_session.close()
    # A second pass has nothing more to do with the same answer.
    assert provider.reconcile(live_lease_ids) == []


def test_reconcile_never_drops_a_stranger(
    provider: PostgresProvider, su: Conn, pg_cluster: PgCluster
) -> None:
    role = f"svc_{secrets.token_hex(4)}"
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        try:
            provider.reconcile(lambda ids: set())
            assert role_exists(su, role)
            assert role_exists(su, pg_cluster.admin_user)
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- names ---------------------------------------------------------------------------------

ODD_IDS = [
    "lse_0123456789abcdef0123",
    "LSE_0123456789ABCDEF0123",
    "lse-0123",
    "lse_0123",
    "a" * 56,
    "a" * 57,
    "a" * 500,
    "ünïcødé-lease-ïd",
    "x'; DROP ROLE postgres; --",
    'quote"in"id',
    "",
    "_",
    "__",
    "a__b",
    "trailing_",
    "with space",
    "\x00nul",
]


def test_object_names_are_safe_bounded_and_distinct(provider: PostgresProvider) -> None:
    names = [provider.object_name(make_lease(lease_id)) for lease_id in ODD_IDS]
    for name in names:
        assert name.startswith(OBJECT_PREFIX)
        assert len(name.encode()) <= 63
        assert name == name.lower()
        assert all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    assert len(set(names)) == len(names)
    assert names == [provider.object_name(make_lease(i)) for i in ODD_IDS]  # deterministic


@pytest.mark.parametrize("lease_id", ["Ünï/cødé lease:" + "z" * 90, "x'; DROP ROLE postgres; --"])
def test_odd_lease_ids_issue_working_roles(issue: Any, lease_id: str) -> None:
    lease, cred = issue(lease=make_lease(lease_id))
    assert cred.extra["username"] == role_name(lease.id)
    with login(cred) as conn:
        assert conn.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)


# -- rotate_root ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?sslmode=disable&options=-c%20search_path%3Dpayments&application_name=a+b",
        "password-in-query",
    ],
)
def test_rotate_root_replaces_the_admin_password(
    pg_cluster: PgCluster, su: Conn, query: str
) -> None:
    # A second admin of its own, so the shared target keeps working for other tests.
    user, password = f"rot_admin_{secrets.token_hex(3)}", secrets.token_urlsafe(24)
    su.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(password)
        )
    )
    try:
        if query == "password-in-query":
            dsn = f"postgresql://{pg_cluster.host}:{pg_cluster.port}/appdb?user={user}"
            dsn += f"&password={password}&connect_timeout=5"
        else:
            dsn = pg_cluster.dsn(user, password) + query
        old = Target("rot", "postgres", dsn)
        provider = PostgresProvider(old)
        rotated = provider.rotate_root()
        assert rotated.name == old.name
        assert rotated.kind == old.kind
        assert rotated.dsn != old.dsn
        assert rotated.dsn.startswith(f"postgresql://{user}:")
        assert provider.target == rotated
        assert password not in repr(rotated)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(old.dsn, connect_timeout=5)
        with psycopg.connect(rotated.dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (user,)
            if "search_path" in query:  # the rest of the DSN still means what it meant
                assert conn.execute("SHOW search_path").fetchone() == ("payments",)
                assert conn.info.get_parameters()["application_name"] == "a+b"
        assert password not in rotated.dsn
        assert provider.health()["ok"] is True
        assert "SCRAM-SHA-256$" in str(
            su.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [user]).fetchone()
        )
    finally:
        su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))


# -- health and failures -------------------------------------------------------------------


def test_health_reports_version_and_createrole(provider: PostgresProvider) -> None:
    report = provider.health()
    assert report["ok"] is True
    assert report["createrole"] is True
    assert report["superuser"] is False
    assert report["user"] == "nhi_admin"
    assert report["server_version_num"] >= 100000
    assert str(report["server_version"])[:2].isdigit()


def test_health_of_an_admin_without_createrole_is_not_ok(pg_cluster: PgCluster, su: Conn) -> None:
    user, password = f"weak_{secrets.token_hex(3)}", secrets.token_urlsafe(24)
    su.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(password)
        )
    )
    try:
        report = PostgresProvider(
            Target("weak", "postgres", pg_cluster.dsn(user, password))
        ).health()
        assert report["ok"] is False
        assert report["createrole"] is False
        assert password not in repr(report)
    finally:
        su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))


def _assert_no_leak(exc: BaseException, *secrets_: str) -> None:
    rendered = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for secret in secrets_:
        for text in rendered:
            assert secret not in text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unreachable_target_fails_closed_without_leaking(pg_cluster: PgCluster) -> None:
    password = "Unreachable-Secret-" + secrets.token_hex(8)
    target = Target(
        "gone", "postgres", f"postgresql://nhi_admin:{password}@127.0.0.1:{_free_port()}/appdb"
    )
    provider = PostgresProvider(target, connect_timeout=2)
    assert password not in repr(provider)
    report = provider.health()
    assert report == {"ok": False, "target": "gone", "error": "OperationalError"}
    for call in (
        lambda: provider.issue(make_lease(), None, PAYMENTS_RO),  # type: ignore[arg-type]
        lambda: provider.revoke(make_lease()),
        lambda: provider.renew(make_lease()),
        lambda: provider.reconcile(lambda ids: set()),
        provider.rotate_root,
    ):
        with pytest.raises(ProviderError) as caught:
            call()
        assert isinstance(caught.value, PostgresError)
        assert caught.value.error == "OperationalError"
        assert caught.value.__cause__ is None
        _assert_no_leak(caught.value, password, target.dsn)


def test_wrong_admin_password_is_refused_without_leaking(pg_cluster: PgCluster) -> None:
    password = "Wrong-Secret-" + secrets.token_hex(8)
    target = Target("bad", "postgres", pg_cluster.dsn(pg_cluster.admin_user, password))
    provider = PostgresProvider(target)
    assert provider.health()["ok"] is False
    with pytest.raises(ProviderError) as caught:
        provider.issue(make_lease(), None, PAYMENTS_RO)  # type: ignore[arg-type]
    assert "cannot connect (OperationalError)" in str(caught.value)
    _assert_no_leak(caught.value, password)


def test_malformed_dsn_is_refused_without_leaking() -> None:
    password = "Malformed-Secret-" + secrets.token_hex(8)
    provider = PostgresProvider(Target("junk", "postgres", f"host=x password={password} junk"))
    assert provider.health()["ok"] is False
    with pytest.raises(ProviderError) as caught:
        provider.revoke(make_lease())
    _assert_no_leak(caught.value, password)


def test_a_stopped_server_delays_revocation_but_does_not_lose_it(
    provider: PostgresProvider, issue: Any, pg_cluster: PgCluster
) -> None:
    lease, cred = issue()
    with pg_cluster.stopped():
        report = provider.health()
        assert report["ok"] is False
        assert pg_cluster.admin_password not in repr(report)
        with pytest.raises(ProviderError) as caught:
            provider.revoke(lease)
        _assert_no_leak(caught.value, pg_cluster.admin_password)
    provider.revoke(lease)  # the retry, once the server is back
    with pytest.raises(psycopg.OperationalError):
        login(cred)


def test_a_superuser_admin_works_too(pg_cluster: PgCluster, su: Conn) -> None:
    provider = PostgresProvider(Target("su", "postgres", pg_cluster.superuser_dsn))
    assert provider.health()["superuser"] is True
    lease = make_lease()
    cred = provider.issue(lease, None, PAYMENTS_RO)  # type: ignore[arg-type]
    conn = login(cred)
    assert conn.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)
    provider.revoke(lease)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    assert not role_exists(su, role_name(lease.id))
