"""Redis ACL users, one per lease (issue #4).

Every user Tether creates is named `OBJECT_PREFIX + <lease id>` so the reconciler can tell
Tether's users from everyone else's (invariant 1), and revocation ends the user's live
connections as well as its password (invariant 2).

The target's DSN carries the admin password: it never reaches an exception, a log line or
a repr. Redis errors are translated into `ProviderError` naming only the error class, and
are raised outside the `except` block so that not even the exception context survives
(the server echoes a rejected `ACL SETUSER` rule verbatim, and socket errors name hosts).
Passwords are sent to the server only as SHA-256 hashes (`#...` rules); the clear
password of a leased user goes to the caller alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, RedisError, ResponseError
from redis.retry import Retry

from tether.model import Identity, Lease, Profile
from tether.providers import OBJECT_PREFIX, IssuedCredential, ProviderError
from tether.targets._sessions import TargetSession
from tether.targets._target import Target
from tether.targets.errors import InvalidGrants
from tether.targets.redis import KIND, _activity
from tether.targets.redis._dsn import parse_dsn
from tether.targets.redis._grants import AclGrants, parse_grants

__all__ = [
    "REDIS_TOKEN_TYPE",
    "AclGrants",
    "CredentialMissing",
    "InvalidGrants",
    "RedisProvider",
    "RedisTargetError",
    "lease_id_of",
    "object_name",
    "parse_grants",
]

log = logging.getLogger("tether.targets.redis")

REDIS_TOKEN_TYPE = "urn:tether:credential:redis"  # noqa: S105 - a type URI, not a secret

_T = TypeVar("_T")

#: Characters a lease id keeps in its user name; everything else is escaped as `.xx`
#: (hex of each UTF-8 byte), so the mapping is reversible and the reconciler can ask
#: about exactly the lease a user belongs to.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]")
_ESCAPE = re.compile(r"\.([0-9a-f]{2})")

#: How many times revocation kills a user's clients before it gives up and retries later.
_KILL_ATTEMPTS = 5
#: How many lease ids the reconciler asks about at once.
_RECONCILE_CHUNK = 500
_PASSWORD_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits


class RedisTargetError(ProviderError):
    """The target refused or could not be reached (raised by the usage evidence calls).
    `error` is the class name of the Redis or socket error, and nothing it said."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


class CredentialMissing(ProviderError):
    """The lease's user is gone or disabled at the target: renewing it cannot succeed."""

    status_code = 410
    code = "credential_missing"


def object_name(lease_id: str) -> str:
    """The ACL user name of a lease: the prefix and the lease id, escaped reversibly."""
    if not lease_id:
        raise ValueError("a lease id is required")
    escaped = "".join(
        ch if _SAFE_ID.fullmatch(ch) else "".join(f".{b:02x}" for b in ch.encode())
        for ch in lease_id
    )
    return OBJECT_PREFIX + escaped


def lease_id_of(name: str) -> str | None:
    """The lease id a user name stands for, or None when it is not one Tether would make."""
    if not name.startswith(OBJECT_PREFIX):
        return None
    body = name[len(OBJECT_PREFIX) :]
    raw = bytearray()
    at = 0
    while at < len(body):
        if body[at] == ".":
            escape = _ESCAPE.match(body, at)
            if escape is None:
                return None
            raw.append(int(escape.group(1), 16))
            at = escape.end()
        else:
            raw += body[at].encode()
            at += 1
    try:
        lease_id = raw.decode()
    except UnicodeDecodeError:
        return None
    # Only the canonical spelling belongs to the lease; any other is an orphan.
    if not lease_id or object_name(lease_id) != name:
        return None
    return lease_id


def _command(client: Any, *args: str) -> Any:
    """Send one raw command. The rules are built here, one argument each, rather than by
    redis-py's keyword helpers; redis-py leaves `execute_command` untyped."""
    return client.execute_command(*args)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str  # the class name of the Redis or socket error, and nothing it said


def _attempt(call: Callable[[], _T]) -> _T | _Failed:
    try:
        return call()
    except RedisError as exc:
        return _Failed(type(exc).__name__)
    except (OSError, ValueError) as exc:  # socket and URL errors below redis-py
        return _Failed(type(exc).__name__)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _new_password() -> str:
    # URL-safe alphabet: no whitespace or separators, so it is one rule and needs no quoting.
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def _hashed(password: str) -> str:
    """The SHA-256 form ACL rules accept (`#hash` adds, `!hash` removes): the clear
    password then travels only to the caller, never over the admin connection."""
    return hashlib.sha256(password.encode()).hexdigest()


class RedisProvider:
    """Issues one Redis ACL user per lease and removes it, sessions included, on revoke."""

    name = KIND.name
    external = True

    def __init__(self, target: Target, *, socket_timeout: float = 5.0) -> None:
        self.target = target
        self._socket_timeout = socket_timeout
        self._dsn = parse_dsn(target)
        # Guards swapping the admin connection during rotate_root.
        self._lock = threading.Lock()
        self._client = self._connect(target.dsn)

    def __repr__(self) -> str:
        return f"RedisProvider(target={self.target.name!r})"

    # -- the protocol --------------------------------------------------------------

    def object_name(self, lease: Lease) -> str:
        return object_name(lease.id)

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        # Validate before anything is sent: a malformed grant never reaches the server.
        grants = parse_grants(profile.grants if profile is not None else None)
        user = self._leased_name(lease)
        password = _new_password()
        rules = ["reset", "on", f"#{_hashed(password)}", *grants.rules(self._dsn.db)]
        r = self._redis

        def create() -> None:
            # A retry after a crash may find the user with connections authenticated by a
            # password nobody received: deleting it first ends those too.
            r.acl_deluser(user)
            _command(r, "ACL SETUSER", user, *rules)

        self._guard("issue", create)
        return IssuedCredential(
            secret=password,
            token_type=REDIS_TOKEN_TYPE,
            extra={
                "username": user,
                "host": self._dsn.host,
                "port": self._dsn.port,
                "db": self._dsn.db,
                "url": self._dsn.url(user, None),
            },
        )

    def renew(self, lease: Lease) -> None:
        """ACL users have no expiry of their own: check that the user is still there."""
        user = self._leased_name(lease)
        r = self._redis
        info = self._guard("renew", lambda: r.acl_getuser(user))
        flags = info.get("flags") if info else None
        if not isinstance(flags, list) or "on" not in flags:
            raise CredentialMissing(
                f"redis target {self.target.name!r}: the user of lease {lease.id} is gone"
            )

    def revoke(self, lease: Lease) -> None:
        self._remove(self._leased_name(lease))

    def reconcile(self, live_lease_ids: Callable[[Sequence[str]], set[str]]) -> list[str]:
        r = self._redis
        users = self._guard("reconcile", lambda: [_text(u) for u in r.acl_users()])
        owned = {
            u: lease_id_of(u)
            for u in users
            if u.startswith(OBJECT_PREFIX) and u != self._dsn.username
        }
        ids = sorted({i for i in owned.values() if i is not None})
        live: set[str] = set()
        for start in range(0, len(ids), _RECONCILE_CHUNK):
            live |= live_lease_ids(ids[start : start + _RECONCILE_CHUNK])
        dropped: list[str] = []
        failed: list[str] = []
        # A prefixed name that maps to no lease id cannot belong to a live lease: drop it.
        for user, lease_id in sorted(owned.items()):
            if lease_id is not None and lease_id in live:
                continue
            try:
                self._remove(user)
            except ProviderError:
                failed.append(user)
                continue
            dropped.append(user)
        if failed:
            log.warning(
                "reconcile could not remove some users; the next run retries",
                extra={"target": self.target.name, "users": failed},
            )
            if not dropped:
                raise ProviderError(f"redis target {self.target.name!r}: reconcile failed")
        # What was removed is returned even after a partial failure, so it is audited.
        return dropped

    def rotate_root(self) -> Target:
        """Give the admin user a fresh random password and return the target with it.

        The new password is added and proven on a new connection before the old one is
        removed, so a failure part-way never leaves this provider without a working
        credential. If the final step fails, this provider already uses the new password
        and a retried rotate_root completes the rotation from it.
        """
        with self._lock:
            old = self._client
            admin = self._dsn.username
            password = _new_password()
            digest = _hashed(password)
            self._guard("rotate_root", lambda: _command(old, "ACL SETUSER", admin, f"#{digest}"))
            new_dsn = self._dsn.admin_url(password)
            fresh = self._connect(new_dsn)
            try:
                self._guard("rotate_root", lambda: self._authenticated_as(fresh, admin))
            except ProviderError:
                fresh.close()
                # The old password still works: take back the unproven one if we can.
                with contextlib.suppress(ProviderError):
                    self._guard(
                        "rotate_root",
                        lambda: _command(old, "ACL SETUSER", admin, f"!{digest}"),
                    )
                raise
            self.target = replace(self.target, dsn=new_dsn)
            self._dsn = parse_dsn(self.target)
            self._client = fresh
            old.close()
            # One command, so afterwards the admin has exactly the new password.
            self._guard(
                "rotate_root",
                lambda: _command(fresh, "ACL SETUSER", admin, "resetpass", f"#{digest}"),
            )
            # Pooled connections stay logged in whatever the password: prove a new login.
            fresh.connection_pool.disconnect()
            self._guard("rotate_root", lambda: self._authenticated_as(fresh, admin))
        return self.target

    def health(self) -> Mapping[str, Any]:
        r = self._redis

        def probe() -> dict[str, Any]:
            r.ping()
            version = r.info("server").get("redis_version")
            user = _text(r.acl_whoami())
            can_admin = self._can_administer(r, user)
            return {"ok": can_admin, "version": version, "user": user, "can_admin": can_admin}

        result = _attempt(probe)
        if isinstance(result, _Failed):
            return {"ok": False, "error": result.error}
        return result

    # -- usage evidence (SessionSource) --------------------------------------------

    def sample_sessions(self, static_users: Collection[str]) -> list[TargetSession]:
        """Live clients of the per-lease users and of `static_users` (`_activity`)."""
        r = self._redis

        def sample() -> list[TargetSession]:
            own_id, clients = _activity.client_list(r)
            return _activity.sessions_of(
                self.target.name,
                clients,
                own_id=own_id,
                admin=self._dsn.username,
                static_users=static_users,
                now=dt.datetime.now(dt.UTC),
                lease_id_of=lease_id_of,
            )

        return self._guard_evidence("sample_sessions", sample)

    def usable_users(self, users: Collection[str]) -> set[str]:
        """Which of `users` exist, are `on` and have a password (or `nopass`)."""
        if not users:
            return set()
        r = self._redis
        return self._guard_evidence("usable_users", lambda: _activity.usable_users(r, users))

    # -- connections ---------------------------------------------------------------

    def _connect(self, dsn: str) -> redis.Redis:
        def build() -> redis.Redis:
            try:
                # No client name: CLIENT SETNAME failing would fail every connection, and
                # health should report missing rights, not a connection error.
                return redis.Redis.from_url(
                    dsn,
                    decode_responses=True,
                    socket_timeout=self._socket_timeout,
                    socket_connect_timeout=self._socket_timeout,
                    # One immediate retry covers a pooled connection the server closed
                    # while idle; anything longer is the caller's retry with backoff.
                    retry=Retry(NoBackoff(), 1),
                )
            except TypeError:  # redis-py refusing an option; parse_dsn should have
                raise ValueError("unsupported DSN option") from None

        return self._guard("connect", build)

    def _guard(self, op: str, call: Callable[[], _T]) -> _T:
        """Run `call`; turn any Redis failure into a ProviderError naming only its class."""
        result = _attempt(call)
        if not isinstance(result, _Failed):
            return result
        # Raised outside the except block that caught the original, so not even its
        # __context__ survives: no traceback shows what the server or the socket said.
        raise ProviderError(f"redis target {self.target.name!r}: {op} failed ({result.error})")

    def _guard_evidence(self, op: str, call: Callable[[], _T]) -> _T:
        """`_guard`, for the usage evidence calls: the error also carries the class name
        (`RedisTargetError.error`), so a failed sample can report it."""
        result = _attempt(call)
        if not isinstance(result, _Failed):
            return result
        raise RedisTargetError(
            f"redis target {self.target.name!r}: {op} failed ({result.error})", result.error
        )

    @property
    def _redis(self) -> redis.Redis:
        with self._lock:
            return self._client

    # -- helpers -------------------------------------------------------------------

    def _leased_name(self, lease: Lease) -> str:
        user = object_name(lease.id)
        if user == self._dsn.username:
            # Unreachable with Tether's lease ids; never let a lease touch the admin.
            raise ProviderError(f"redis target {self.target.name!r}: lease names the admin user")
        return user

    @staticmethod
    def _authenticated_as(client: redis.Redis, user: str) -> None:
        if client.acl_whoami() != user:
            raise ResponseError("authenticated as another user")

    @staticmethod
    def _can_administer(r: redis.Redis, user: str) -> bool:
        """May `user` run what issue, revoke and reconcile need?"""
        try:
            r.acl_users()
        except NoPermissionError:
            return False
        needed = (
            ("ACL", "SETUSER", "probe"),
            ("ACL", "DELUSER", "probe"),
            ("CLIENT", "KILL", "USER", "probe"),
            ("CLIENT", "LIST"),
        )
        for command in needed:
            try:
                verdict = _command(r, "ACL DRYRUN", user, *command)
            except NoPermissionError:
                return False  # cannot tell: report it rather than assume
            except ResponseError:
                return True  # no ACL DRYRUN before Redis 7: ACL USERS answered, trust it
            if verdict != "OK":
                return False
        return True

    def _remove(self, user: str) -> None:
        """Disable, disconnect and delete `user`; a missing user is already removed."""
        if user == self._dsn.username:
            raise ProviderError(f"redis target {self.target.name!r}: refusing to remove the admin")
        r = self._redis
        if self._guard("revoke", lambda: r.acl_getuser(user)) is None:
            return
        # First: with no password and `off`, nothing can authenticate as it again, so the
        # kill below cannot race a fresh login.
        self._guard("revoke", lambda: _command(r, "ACL SETUSER", user, "off", "resetpass"))
        for _ in range(_KILL_ATTEMPTS):
            self._guard("revoke", lambda: self._kill_clients(r, user))
            if not self._guard("revoke", lambda: self._clients_of(r, user)):
                break
        else:
            raise ProviderError(
                f"redis target {self.target.name!r}: connections of {user} survived the kill"
            )
        self._guard("revoke", lambda: r.acl_deluser(user))

    @staticmethod
    def _kill_clients(r: redis.Redis, user: str) -> None:
        # "No such user": deleted meanwhile, and deleting a user ends its clients.
        with contextlib.suppress(ResponseError):
            r.client_kill_filter(user=user)

    @staticmethod
    def _clients_of(r: redis.Redis, user: str) -> list[str]:
        return [str(c.get("id")) for c in r.client_list() if c.get("user") == user]
