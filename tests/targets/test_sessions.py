"""Usage evidence from targets: live sessions and usable users, against real servers.

PostgreSQL is the throwaway cluster of tests/pg_cluster.py (the `pg_cluster` session
fixture; its admin is CREATEROLE, not superuser, so seeing leased roles' sessions needs
the borrowed membership), Redis a private redis-server (tests/redis_server.py). Targets
are registered in a node's TargetRegistry, as `tether target add` does. Tests stay apart
by fresh lease ids and role names.
"""

from __future__ import annotations

import datetime as dt
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from tests.pg_cluster import PgCluster
from tests.redis_server import RedisServer, redis_server
from tests.targets.test_kinds import FAKE
from tether.app import Tether
from tether.config import Settings
from tether.model import Identity, Kind, Lease, LeaseState, Profile
from tether.providers import OBJECT_PREFIX, ProviderError
from tether.targets import EvidenceUnsupported, TargetRegistry, TargetSession
from tether.targets.postgres._session import PostgresError
from tether.targets.redis._activity import sessions_of
from tether.targets.redis._provider import RedisTargetError, lease_id_of, object_name

pytestmark = pytest.mark.service

PG = "payments-db"
CACHE = "cache"
IDENTITY = Identity("svc-cache", Kind.WORKLOAD, "team-a", "reads sessions", "CHG-1", "prod")
PG_PROFILE = Profile(
    id="payments-ro",
    provider="postgres",
    max_ttl=dt.timedelta(hours=1),
    target=PG,
    grants={"schema": "payments", "privileges": ["SELECT"]},
)
REDIS_PROFILE = Profile(
    id="cache-ro",
    provider="redis",
    max_ttl=dt.timedelta(hours=1),
    target=CACHE,
    # Clients name themselves (CLIENT SETNAME) when they connect; a profile allows it.
    grants={"keys": ["session:*"], "commands": ["+client|setname"]},
)

Conn = psycopg.Connection[tuple[Any, ...]]


def _lease(profile: Profile) -> Lease:
    now = dt.datetime.now(dt.UTC)
    return Lease(
        id=f"lse_{secrets.token_hex(10)}",
        identity_id=IDENTITY.id,
        owner_id=IDENTITY.owner_id,
        provider=profile.provider,
        issued_at=now,
        expires_at=now + dt.timedelta(hours=1),
        state=LeaseState.PENDING,
        profile_id=profile.id,
        target=profile.target,
    )


@pytest.fixture(scope="module")
def redis_target() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def node(tmp_path: Path, pg_cluster: PgCluster, redis_target: RedisServer) -> Iterator[Tether]:
    n = Tether(Settings(home=tmp_path, database_url="memory://"))
    n.initialize(shares=1, threshold=1)
    n.targets.add(PG, "postgres", pg_cluster.admin_dsn, "test")
    n.targets.add(CACHE, "redis", redis_target.target.dsn, "test")
    yield n
    n.stop()


@pytest.fixture
def registry(node: Tether) -> TargetRegistry:
    return node.targets


@pytest.fixture
def su(pg_cluster: PgCluster) -> Iterator[Conn]:
    with pg_cluster.superuser() as conn:
        yield conn


@pytest.fixture
def leases(registry: TargetRegistry) -> Iterator[list[Lease]]:
    """Leases a test issues; revoked afterwards (sessions included)."""
    issued: list[Lease] = []
    yield issued
    for lease in issued:
        registry.provider(lease.target or "").revoke(lease)


def _issue(registry: TargetRegistry, leases: list[Lease], profile: Profile) -> tuple[Lease, Any]:
    lease = _lease(profile)
    leases.append(lease)
    assert profile.target is not None
    return lease, registry.provider(profile.target).issue(lease, IDENTITY, profile)


@pytest.fixture
def pg_roles(su: Conn) -> Iterator[list[str]]:
    """Roles a test creates (as superuser); dropped afterwards with their sessions."""
    made: list[str] = []
    yield made
    for role in made:
        su.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
        )
        su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _static_role(by: Conn, pg_roles: list[str], options: str = "LOGIN") -> tuple[str, str]:
    """A role made `by` this connection: by the admin, as a static role usually is (so
    on PostgreSQL 16 and later it holds ADMIN OPTION on it), or by the superuser."""
    role, password = f"static_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    pg_roles.append(role)
    by.execute(
        sql.SQL("CREATE ROLE {} " + options + " PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    return role, password


def _mine(sessions: list[TargetSession], target: str, user: str) -> list[TargetSession]:
    return [s for s in sessions if s.target == target and s.user == user]


def _backend_start(su: Conn, conn: Conn) -> dt.datetime:
    row = su.execute(
        "SELECT backend_start FROM pg_stat_activity WHERE pid = %s", [conn.info.backend_pid]
    ).fetchone()
    assert row is not None
    started: dt.datetime = row[0]
    return started.astimezone(dt.UTC)


# -- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_sessions_of_a_leased_role_and_a_static_role(
    registry: TargetRegistry,
    leases: list[Lease],
    su: Conn,
    pg_roles: list[str],
    pg_cluster: PgCluster,
) -> None:
    lease, cred = _issue(registry, leases, PG_PROFILE)
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as admin:
        static, password = _static_role(admin, pg_roles)
    with (
        psycopg.connect(
            cred.extra["dsn"], password=cred.secret, application_name="psql", autocommit=True
        ) as leased,
        psycopg.connect(
            pg_cluster.dsn(static, password), application_name="billing-worker", autocommit=True
        ) as fixed,
    ):
        sessions, failures = registry.sample_sessions({PG: [static]})

        assert failures == {}
        assert _mine(sessions, PG, cred.extra["username"]) == [
            TargetSession(
                target=PG,
                user=cred.extra["username"],
                lease_id=lease.id,
                application="psql",
                source="127.0.0.1",
                started_at=_backend_start(su, leased),
            )
        ]
        assert _mine(sessions, PG, static) == [
            TargetSession(
                target=PG,
                user=static,
                lease_id=None,
                application="billing-worker",
                source="127.0.0.1",
                started_at=_backend_start(su, fixed),
            )
        ]
        assert all(s.started_at is None or s.started_at.tzinfo == dt.UTC for s in sessions)
        # Tether's own admin connection is never part of the sample.
        assert not [s for s in sessions if s.user == pg_cluster.admin_user]
        # The membership borrowed to see the details was rolled back.
        borrowed = su.execute(
            "SELECT pg_has_role(%s, %s, 'USAGE')", [pg_cluster.admin_user, cred.extra["username"]]
        ).fetchone()
        assert borrowed == (False,)

        # A role neither prefixed nor named as static is not sampled.
        unnamed, _ = registry.sample_sessions({})
        assert _mine(unnamed, PG, static) == []


def test_postgres_sessions_the_admin_may_not_see_are_reported_without_details(
    registry: TargetRegistry, su: Conn, pg_roles: list[str], pg_cluster: PgCluster
) -> None:
    # A superuser's sessions: no CREATEROLE admin may take its privileges.
    role, password = _static_role(su, pg_roles, "LOGIN SUPERUSER")
    with psycopg.connect(pg_cluster.dsn(role, password), application_name="pgadmin"):
        sessions, failures = registry.sample_sessions({PG: {role}})
    assert failures == {}
    assert _mine(sessions, PG, role) == [
        TargetSession(target=PG, user=role, application="pgadmin", source=None, started_at=None)
    ]


def test_postgres_usable_users(
    registry: TargetRegistry, leases: list[Lease], su: Conn, pg_roles: list[str]
) -> None:
    can, _ = _static_role(su, pg_roles)
    forever, _ = _static_role(su, pg_roles, "LOGIN VALID UNTIL 'infinity'")
    nologin, _ = _static_role(su, pg_roles, "NOLOGIN")
    expired, _ = _static_role(su, pg_roles, "LOGIN VALID UNTIL '2001-01-01 00:00:00+00'")
    dropped, _ = _static_role(su, pg_roles)
    su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(dropped)))
    lease, cred = _issue(registry, leases, PG_PROFILE)
    leased = cred.extra["username"]
    everyone = {can, forever, nologin, expired, dropped, leased, "no_such_role"}

    assert registry.usable_users(PG, everyone) == {can, forever, leased}
    # What retiring a static version does: NOLOGIN and an expiry in the past.
    su.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(can)))
    su.execute(sql.SQL("ALTER ROLE {} VALID UNTIL '-infinity'").format(sql.Identifier(forever)))
    registry.provider(PG).revoke(lease)
    assert registry.usable_users(PG, everyone) == set()
    assert registry.usable_users(PG, []) == set()


# -- Redis ---------------------------------------------------------------------------------


def _client(server: RedisServer, user: str, password: str, name: str | None) -> redis.Redis:
    client = server.client(user, password)
    if name is not None:
        client.client_setname(name)
    else:
        client.exists("session:1")  # any command: the connection is made on first use
    return client


def test_redis_sessions_of_a_leased_user_and_a_static_user(
    registry: TargetRegistry, leases: list[Lease], redis_target: RedisServer
) -> None:
    lease, cred = _issue(registry, leases, REDIS_PROFILE)
    user = cred.extra["username"]
    static, password = f"static-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with redis_target.admin_client() as admin:
        admin.execute_command("ACL SETUSER", static, "on", f">{password}", "~session:*", "+@read")
    before = dt.datetime.now(dt.UTC)
    try:
        with (
            _client(redis_target, user, cred.secret, "worker-7"),
            _client(redis_target, static, password, None),
        ):
            sessions, failures = registry.sample_sessions({CACHE: (static,)})
            after = dt.datetime.now(dt.UTC)
    finally:
        with redis_target.admin_client() as admin:
            admin.acl_deluser(static)

    assert failures == {}
    [leased] = _mine(sessions, CACHE, user)
    [fixed] = _mine(sessions, CACHE, static)
    assert (leased.lease_id, leased.application, leased.source) == (
        lease.id,
        "worker-7",
        "127.0.0.1",
    )
    assert (fixed.lease_id, fixed.application, fixed.source) == (None, None, "127.0.0.1")
    # Redis gives an age in whole seconds, on its own (cached) clock: the start time is
    # that precise, no more.
    slack = dt.timedelta(seconds=2)
    for session in (leased, fixed):
        assert session.started_at is not None and session.started_at.tzinfo == dt.UTC
        assert before - slack <= session.started_at <= after + slack
    assert not _mine(sessions, CACHE, redis_target.admin)


def test_redis_client_addresses_and_names_read_from_client_list() -> None:
    # CLIENT LIST's shapes, including those this server cannot produce (IPv6, a socket).
    now = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
    lease_user = object_name("lse_1")
    clients = [
        {"id": "1", "user": lease_user, "addr": "10.1.2.3:5000", "name": "", "age": "60"},
        {"id": "2", "user": lease_user, "addr": "[::1]:6000", "name": "job", "age": "0"},
        {"id": "3", "user": "app", "addr": "/run/redis.sock:0", "flags": "U", "age": "5"},
        {"id": "4", "user": "tether_admin", "addr": "10.0.0.1:1", "age": "1"},  # the admin
        {"id": "5", "user": "tether_x.zz", "addr": "10.0.0.2:1", "age": "1"},  # not a lease
        {"id": "6", "user": "someone", "addr": "10.0.0.3:1", "age": "1"},  # not asked for
        {"id": "7", "user": "app", "addr": "10.0.0.4:1", "age": "1"},  # our own connection
    ]
    sessions = sessions_of(
        CACHE,
        clients,
        own_id="7",
        admin="tether_admin",
        static_users={"app"},
        now=now,
        lease_id_of=lease_id_of,
    )
    assert sessions == [
        TargetSession(CACHE, "app", None, None, "local", now - dt.timedelta(seconds=5)),
        TargetSession(CACHE, lease_user, "lse_1", None, "10.1.2.3", now - dt.timedelta(minutes=1)),
        TargetSession(CACHE, lease_user, "lse_1", "job", "::1", now),
        TargetSession(CACHE, "tether_x.zz", None, None, "10.0.0.2", now - dt.timedelta(seconds=1)),
    ]


def test_redis_usable_users(
    registry: TargetRegistry, leases: list[Lease], redis_target: RedisServer
) -> None:
    tag = secrets.token_hex(4)
    users = {
        "on": ["on", ">pw-on"],
        "nopass": ["on", "nopass"],
        "off": ["off", ">pw-off"],
        "passwordless": ["on"],  # on, yet nothing can authenticate as it
    }
    with redis_target.admin_client() as admin:
        for name, rules in users.items():
            admin.execute_command("ACL SETUSER", f"{name}-{tag}", *rules)
        try:
            lease, cred = _issue(registry, leases, REDIS_PROFILE)
            leased = cred.extra["username"]
            asked = {f"{name}-{tag}" for name in users} | {leased, f"gone-{tag}"}

            assert registry.usable_users(CACHE, asked) == {f"on-{tag}", f"nopass-{tag}", leased}
            admin.execute_command("ACL SETUSER", f"on-{tag}", "off")  # disabled
            admin.acl_deluser(f"nopass-{tag}")  # deleted
            registry.provider(CACHE).revoke(lease)
            assert registry.usable_users(CACHE, asked) == set()
        finally:
            admin.acl_deluser(*(f"{name}-{tag}" for name in users))


# -- across targets ------------------------------------------------------------------------


def test_a_down_target_is_a_failure_of_the_sample_not_an_exception(
    registry: TargetRegistry, leases: list[Lease], pg_cluster: PgCluster
) -> None:
    # Nothing listens on port 9 (discard): both logins are refused at once.
    registry.add("dead-db", "postgres", "postgresql://admin:pg-secret@127.0.0.1:9/app", "test")
    registry.add("dead-cache", "redis", "redis://admin:redis-secret@127.0.0.1:9/0", "test")
    _, cred = _issue(registry, leases, PG_PROFILE)
    with psycopg.connect(cred.extra["dsn"], password=cred.secret):
        sessions, failures = registry.sample_sessions({"dead-db": ["x"], "nowhere": ["y"]})

    assert failures == {"dead-db": "OperationalError", "dead-cache": "ConnectionError"}
    assert _mine(sessions, PG, cred.extra["username"])  # the live target still answered
    with pytest.raises(PostgresError) as pg_down:
        registry.usable_users("dead-db", ["x"])
    with pytest.raises(RedisTargetError) as redis_down:
        registry.usable_users("dead-cache", ["x"])
    assert redis_down.value.__context__ is None  # not even the socket error's text
    for raised in (pg_down.value, redis_down.value):
        shown = "".join(traceback.format_exception(raised))
        assert "secret" not in shown and raised.__cause__ is None


def test_a_kind_without_evidence_says_so(node: Tether) -> None:
    registry = TargetRegistry(node.store, node.barrier, node.audit, kinds={FAKE.name: FAKE})
    registry.add("ledger", FAKE.name, "fakedb://admin:pw@ledger", "test")
    sessions, failures = registry.sample_sessions({})
    # The node's other targets are of kinds this registry does not know.
    assert sessions == []
    assert failures == {
        "ledger": "EvidenceUnsupported",
        PG: "InvalidTarget",
        CACHE: "InvalidTarget",
    }
    with pytest.raises(EvidenceUnsupported) as refused:
        registry.usable_users("ledger", ["x"])
    assert isinstance(refused.value, ProviderError)
    assert OBJECT_PREFIX not in str(refused.value)


def test_one_user_name_passed_bare_is_refused(registry: TargetRegistry) -> None:
    # A str is a collection of names too, one letter each: say so instead.
    with pytest.raises(TypeError):
        registry.sample_sessions({PG: "billing_a"})
    with pytest.raises(TypeError):
        registry.usable_users(PG, "billing_a")
