"""Redis ACL users per lease, against real redis-servers (tests/redis_server.py).

One server serves the session; tests stay apart by fresh lease ids. Tests that change the
server itself (rotating the admin password, stopping it) start their own.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.redis_server import RedisServer, redis_server
from tether.model import Identity, Kind, Lease, LeaseState, Profile
from tether.providers import OBJECT_PREFIX, ProviderError
from tether.targets import Target
from tether.targets.redis._provider import (
    REDIS_TOKEN_TYPE,
    CredentialMissing,
    InvalidGrants,
    RedisProvider,
    lease_id_of,
    object_name,
    parse_grants,
)

IDENTITY = Identity("svc-cache", Kind.WORKLOAD, "team-a", "reads sessions", "CHG-1", "prod")
SESSIONS = {"keys": ["session:*"], "categories": ["+@read", "+@write"]}


def _lease() -> Lease:
    now = dt.datetime.now(dt.UTC)
    return Lease(
        id=f"lse_{secrets.token_hex(10)}",
        identity_id=IDENTITY.id,
        owner_id=IDENTITY.owner_id,
        provider="redis",
        issued_at=now,
        expires_at=now + dt.timedelta(minutes=5),
        state=LeaseState.PENDING,
        profile_id="cache",
        target="redis-test",
    )


def _profile(grants: Mapping[str, Any] | None) -> Profile:
    return Profile(
        id="cache",
        provider="redis",
        max_ttl=dt.timedelta(hours=1),
        target="redis-test",
        grants=grants,
    )


def _connection(server: RedisServer, username: str, password: str) -> redis.Connection:
    """One raw connection, outside any pool, that never reconnects by itself."""
    conn = redis.Connection(
        host=server.host,
        port=server.port,
        username=username,
        password=password,
        decode_responses=True,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    conn.connect()
    return conn


def _call(conn: redis.Connection, *args: str) -> Any:
    conn.send_command(*args)
    return conn.read_response()


def _client_ids(server: RedisServer, username: str) -> set[str]:
    with server.admin_client() as admin:
        return {str(c["id"]) for c in admin.client_list() if c["user"] == username}


def _secret_free(text: str, *secrets_: str) -> bool:
    return not any(s in text for s in secrets_)


# -- names and grants: no server needed ------------------------------------------------


@given(st.text(min_size=1, max_size=40))
def test_object_names_map_back_to_exactly_their_lease(lease_id: str) -> None:
    name = object_name(lease_id)
    assert name.startswith(OBJECT_PREFIX)
    assert all(ch.isascii() and ch.isprintable() and not ch.isspace() for ch in name)
    assert lease_id_of(name) == lease_id


def test_tether_lease_ids_are_kept_as_they_are() -> None:
    assert object_name("lse_0123456789abcdef0123") == "tether_lse_0123456789abcdef0123"


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "tether-admin",
        "app_tether_x",
        "tether_",
        "tether_a.zz",
        "tether_a.5f",
        "tether_a.",
    ],
)
def test_names_tether_would_not_make_map_to_no_lease(name: str) -> None:
    # "tether_a.5f" decodes to "a_", whose own name is "tether_a_": not canonical.
    assert lease_id_of(name) is None


def test_grants_render_in_a_fixed_order_that_ends_in_denials() -> None:
    grants = parse_grants(
        {
            "keys": ["session:*", "cache:{user}:?"],
            "channels": ["news.*"],
            "categories": ["+@read", "+@write", "-@slow"],
            "commands": ["+ping", "-flushall", "+config|get", "+georadius_ro"],
        }
    )
    assert grants.rules() == [
        "resetkeys",
        "~session:*",
        "~cache:{user}:?",
        "resetchannels",
        "&news.*",
        "+@read",
        "+@write",
        "-@slow",
        "-@dangerous",
        "+ping",
        "-flushall",
        "+config|get",
        "+georadius_ro",
        "-@admin",
    ]
    assert grants.rules(db=3)[-2:] == ["+select|3", "-@admin"]


def test_missing_grants_mean_read_only_on_no_keys() -> None:
    expected = ["resetkeys", "resetchannels", "+@read", "-@dangerous", "-@admin"]
    assert parse_grants(None).rules() == expected
    assert parse_grants({}).rules() == expected
    assert parse_grants({"keys": []}).rules() == expected


INJECTIONS: list[Mapping[str, Any]] = [
    {"keys": ["session:* on >pw"]},
    {"keys": ["session:*\n+@all"]},
    {"keys": ["session:*\r\nallkeys"]},
    {"keys": ["(~* +@all)"]},
    {"keys": ["%RW~*"]},
    {"keys": ["a\x00b"]},
    {"keys": ["sessión:*"]},
    {"keys": [""]},
    {"keys": "session:*"},
    {"keys": [["session:*"]]},
    {"keys": [7]},
    {"channels": ["news.* on"]},
    {"categories": ["allcommands"]},
    {"categories": ["+@all on >pw"]},
    {"categories": ["+@read\n+@all"]},
    {"categories": ["+@dangerous"]},
    {"categories": ["+@admin"]},
    {"categories": ["+read"]},
    {"commands": ["allcommands"]},
    {"commands": ["+@all"]},
    {"commands": ["on"]},
    {"commands": [">pw"]},
    {"commands": ["nopass"]},
    {"commands": ["+get >pw"]},
    {"commands": ["+get\r\n+flushall"]},
    {"commands": ["+GET"]},
    {"commands": ["+get|"]},
    {"privileges": ["SELECT"]},
    {"keys": [f"k{i}" for i in range(257)]},
]


@pytest.mark.parametrize("grants", INJECTIONS)
def test_malformed_grants_are_refused_before_anything_is_sent(grants: Mapping[str, Any]) -> None:
    # Nothing listens on this target: had anything been sent, the error would be a
    # ProviderError about the connection, not a refusal of the grants.
    provider = RedisProvider(Target("nowhere", "redis", "redis://admin:pw@127.0.0.1:1/0"))
    with pytest.raises(InvalidGrants) as refused:
        provider.issue(_lease(), IDENTITY, _profile(grants))
    assert isinstance(refused.value, ValueError)
    assert refused.value.status_code == 422


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://admin:s3cr3t-pw@127.0.0.1/0",
        "redis://admin:s3cr3t-pw@/0",
        "redis://admin:s3cr3t-pw@127.0.0.1:notaport/0",
        "redis://admin:s3cr3t-pw@127.0.0.1:6379/s3cr3t-pw",
        "redis://127.0.0.1:6379/0",
        "redis://admin:s3cr3t-pw@127.0.0.1:6379/0?no_such_option=s3cr3t-pw",
        "redis://admin:s3cr3t-pw@127.0.0.1:6379/0?password=s3cr3t-pw",
    ],
)
def test_a_bad_dsn_is_refused_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ProviderError) as refused:
        RedisProvider(Target("cache", "redis", dsn))
    assert "s3cr3t" not in str(refused.value)
    assert "127.0.0.1" not in str(refused.value)
    assert refused.value.__context__ is None


def test_tls_options_in_the_dsn_are_accepted() -> None:
    dsn = "rediss://admin:pw@127.0.0.1:1/2?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"
    provider = RedisProvider(Target("cache", "redis", dsn))
    assert provider.target.dsn == dsn
    assert provider.health() == {"ok": False, "error": "ConnectionError"}


# -- against a real server -------------------------------------------------------------


@pytest.fixture(scope="session")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
def provider(server: RedisServer) -> RedisProvider:
    provider = RedisProvider(server.target)
    assert server.password not in repr(provider)
    return provider


@pytest.mark.service
def test_the_issued_user_works_within_its_keys_only(
    server: RedisServer, provider: RedisProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    lease = _lease()
    issued = provider.issue(lease, IDENTITY, _profile(SESSIONS))

    user = provider.object_name(lease)
    assert user == OBJECT_PREFIX + lease.id
    assert issued.token_type == REDIS_TOKEN_TYPE
    assert len(issued.secret) >= 32
    assert issued.extra == {
        "username": user,
        "host": server.host,
        "port": server.port,
        "db": 0,
        "url": f"redis://{user}@{server.host}:{server.port}/0",
    }
    with server.client(user, issued.secret) as client:
        assert client.set("session:1", "alice")
        assert client.get("session:1") == "alice"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("orders:1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("orders:1", "x")
        for dangerous in (
            ("FLUSHALL",),
            ("CONFIG", "GET", "*"),
            ("KEYS", "*"),
            ("SWAPDB", "0", "1"),
            ("CLIENT", "KILL", "USER", "tether-admin"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*dangerous)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("ACL", "SETUSER", user, "+@all", "allkeys")
    for secret in (issued.secret, server.password):
        assert all(_secret_free(r.getMessage(), secret) for r in caplog.records)
    provider.revoke(lease)


@pytest.mark.service
def test_without_grants_the_user_can_read_nothing(
    server: RedisServer, provider: RedisProvider
) -> None:
    for profile in (None, _profile(None)):
        lease = _lease()
        issued = provider.issue(lease, IDENTITY, profile)
        with server.client(provider.object_name(lease), issued.secret) as client:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.get("session:1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set("session:1", "x")
        provider.revoke(lease)


@pytest.mark.service
def test_commands_and_channels_are_granted_as_written(
    server: RedisServer, provider: RedisProvider
) -> None:
    lease = _lease()
    grants = {
        "keys": ["h:*"],
        "channels": ["news.*"],
        "categories": ["+@read", "+@pubsub"],
        "commands": ["+ping", "+hset", "-hgetall", "+config|get", "+client|kill"],
    }
    issued = provider.issue(lease, IDENTITY, _profile(grants))
    with server.client(provider.object_name(lease), issued.secret) as client:
        assert client.ping()
        assert client.hset("h:1", "a", "1") == 1
        assert client.hget("h:1", "a") == "1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hgetall("h:1")
        assert client.publish("news.today", "hello") == 0
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish("orders", "hello")
        # Named explicitly, admin commands still never reach a leased user.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("*")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.client_kill_filter(user="tether-admin")
    provider.revoke(lease)


@pytest.mark.service
def test_a_dsn_database_is_the_only_one_the_user_may_select(server: RedisServer) -> None:
    provider = RedisProvider(
        Target("redis-test", "redis", server.url(server.admin, server.password, 3))
    )
    lease = _lease()
    issued = provider.issue(lease, IDENTITY, _profile(SESSIONS))
    user = provider.object_name(lease)
    assert issued.extra["db"] == 3
    assert issued.extra["url"].endswith("/3")
    with server.client(user, issued.secret, db=3) as client:
        assert client.set("session:db3", "x")
    with server.client(user, issued.secret, db=2) as client, pytest.raises(redis.RedisError):
        client.get("session:db3")
    provider.revoke(lease)


@pytest.mark.service
def test_revoke_kills_open_connections_and_refuses_new_logins(
    server: RedisServer, provider: RedisProvider
) -> None:
    lease = _lease()
    issued = provider.issue(lease, IDENTITY, _profile(SESSIONS))
    user = provider.object_name(lease)
    first = _connection(server, user, issued.secret)
    second = _connection(server, user, issued.secret)
    assert _call(first, "SET", "session:open", "1") == "OK"
    assert len(_client_ids(server, user)) == 2

    provider.revoke(lease)

    for conn in (first, second):
        with pytest.raises(redis.ConnectionError):
            _call(conn, "GET", "session:open")
        conn.disconnect()
    with pytest.raises(redis.AuthenticationError):
        _connection(server, user, issued.secret)
    assert _client_ids(server, user) == set()
    with server.admin_client() as admin:
        assert admin.acl_getuser(user) is None


@pytest.mark.service
def test_revoke_is_idempotent_and_accepts_users_that_never_existed(
    server: RedisServer, provider: RedisProvider
) -> None:
    lease = _lease()
    provider.issue(lease, IDENTITY, _profile(SESSIONS))
    provider.revoke(lease)
    provider.revoke(lease)
    never = _lease()
    provider.revoke(never)
    with server.admin_client() as admin:
        users = admin.acl_users()
    assert provider.object_name(lease) not in users
    assert provider.object_name(never) not in users  # revoking never creates the user


@pytest.mark.service
def test_issuing_again_resets_the_user_and_ends_its_old_sessions(
    server: RedisServer, provider: RedisProvider
) -> None:
    lease = _lease()
    user = provider.object_name(lease)
    before = provider.issue(lease, IDENTITY, _profile({"keys": ["*"], "categories": ["+@all"]}))
    old_session = _connection(server, user, before.secret)
    assert _call(old_session, "SET", "anything", "1") == "OK"

    # A retry after a crash: same lease, narrower grants, a new password.
    after = provider.issue(lease, IDENTITY, _profile(SESSIONS))

    assert after.secret != before.secret
    with pytest.raises(redis.ConnectionError):
        _call(old_session, "GET", "anything")
    old_session.disconnect()
    with pytest.raises(redis.AuthenticationError):
        _connection(server, user, before.secret)
    with server.client(user, after.secret) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("anything")
        assert client.set("session:2", "x")
    provider.revoke(lease)


@pytest.mark.service
def test_renew_checks_that_the_user_is_still_there(provider: RedisProvider) -> None:
    lease = _lease()
    provider.issue(lease, IDENTITY, _profile(SESSIONS))
    provider.renew(lease)
    provider.revoke(lease)
    with pytest.raises(CredentialMissing) as missing:
        provider.renew(lease)
    assert isinstance(missing.value, ProviderError)


@pytest.mark.service
def test_reconcile_drops_prefixed_users_without_a_live_lease(
    server: RedisServer, provider: RedisProvider
) -> None:
    live, dead = _lease(), _lease()
    live_cred = provider.issue(live, IDENTITY, _profile(SESSIONS))
    dead_cred = provider.issue(dead, IDENTITY, _profile(SESSIONS))
    dead_session = _connection(server, provider.object_name(dead), dead_cred.secret)
    with server.admin_client() as admin:
        admin.acl_setuser("app-user", enabled=True, passwords=["+app-password"], keys=["app:*"])
        # A Tether-looking name no lease id maps to: an orphan whatever the store says.
        admin.acl_setuser("tether_lse.zz", enabled=False)
    asked: list[str] = []

    def live_lease_ids(ids: Sequence[str]) -> set[str]:
        asked.extend(ids)
        return {live.id} & set(ids)

    dropped = provider.reconcile(live_lease_ids)

    assert provider.object_name(dead) in dropped
    assert "tether_lse.zz" in dropped
    assert provider.object_name(live) not in dropped
    assert {live.id, dead.id} <= set(asked)
    assert all(not i.startswith(OBJECT_PREFIX) for i in asked)
    with server.admin_client() as admin:
        users = set(admin.acl_users())
        admin.acl_deluser("app-user")
    assert {server.admin, "default", "app-user", provider.object_name(live)} <= users
    assert not users & {provider.object_name(dead), "tether_lse.zz"}
    with pytest.raises(redis.ConnectionError):
        _call(dead_session, "GET", "session:1")
    dead_session.disconnect()
    with server.client(provider.object_name(live), live_cred.secret) as client:
        assert client.set("session:live", "1")
    provider.revoke(live)


@pytest.mark.service
def test_reconcile_never_touches_the_admin_even_with_a_tether_name() -> None:
    with redis_server() as server, server.admin_client() as admin:
        admin.acl_setuser(
            "tether_admin",
            enabled=True,
            passwords=[f"+{server.password}"],
            categories=["-@all"],
            commands=["+acl", "+client", "+ping", "+info"],
        )
        target = Target("redis-test", "redis", server.url("tether_admin", server.password))
        provider = RedisProvider(target)
        assert provider.reconcile(lambda ids: set()) == []
        assert "tether_admin" in admin.acl_users()


@pytest.mark.service
def test_health_reports_version_and_admin_rights(
    server: RedisServer, provider: RedisProvider
) -> None:
    health = provider.health()
    assert health["ok"] is True
    assert health["can_admin"] is True
    assert health["user"] == server.admin
    assert str(health["version"]).split(".")[0].isdigit()


@pytest.mark.service
def test_health_is_not_ok_when_the_admin_may_not_run_acl() -> None:
    with redis_server(admin_rules="resetkeys -@all +ping +info +acl|whoami") as server:
        health = RedisProvider(server.target).health()
    assert health["ok"] is False
    assert health["can_admin"] is False


@pytest.mark.service
def test_rotate_root_replaces_the_admin_password() -> None:
    with redis_server() as server:
        provider = RedisProvider(server.target)
        old_target = provider.target
        rotated = provider.rotate_root()

        assert (rotated.name, rotated.kind) == (old_target.name, old_target.kind)
        assert rotated.dsn != old_target.dsn
        assert server.password not in rotated.dsn
        assert "redis://" not in repr(rotated)
        with pytest.raises(redis.AuthenticationError), server.admin_client() as old:
            old.ping()
        with redis.Redis.from_url(rotated.dsn, decode_responses=True) as new:
            assert new.acl_whoami() == server.admin
        # The provider carries on with the new credential, and a fresh one from the new
        # target works as well.
        assert provider.target == rotated
        lease = _lease()
        provider.issue(lease, IDENTITY, _profile(SESSIONS))
        RedisProvider(rotated).revoke(lease)
        assert provider.health()["ok"] is True


@pytest.mark.service
def test_a_stopped_server_gives_provider_errors_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with redis_server() as server:
        provider = RedisProvider(server.target, socket_timeout=2)
        lease = _lease()
        issued = provider.issue(lease, IDENTITY, _profile(SESSIONS))
        server.stop()

        assert provider.health() == {"ok": False, "error": "ConnectionError"}
        calls = {
            "issue": lambda: provider.issue(_lease(), IDENTITY, _profile(SESSIONS)),
            "renew": lambda: provider.renew(lease),
            "revoke": lambda: provider.revoke(lease),
            "reconcile": lambda: provider.reconcile(lambda ids: set()),
            "rotate_root": provider.rotate_root,
        }
        for op, call in calls.items():
            with pytest.raises(ProviderError) as failed:
                call()
            exc = failed.value
            assert type(exc) is ProviderError
            assert f"{op} failed (ConnectionError)" in str(exc)
            assert exc.__cause__ is None
            assert exc.__context__ is None
            shown = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
            assert _secret_free(shown, server.password, issued.secret, server.target.dsn)
        assert provider.target == server.target  # a failed rotation changes nothing
        for record in caplog.records:
            assert _secret_free(record.getMessage(), server.password, issued.secret)
