"""PostgreSQL static roles: one long-lived credential served by two alternating login roles.

Some consumers only take a fixed username and password. Rotating such a secret in place
would break every consumer at once, so two login roles (say `billing_a` and `billing_b`)
take turns: **odd versions use `users[0]`, even versions use `users[1]`** (version 1 →
users[0], 2 → users[1], 3 → users[0] again ...). Staging version N sets a new password on
the role version N-1 does *not* use, so the previous version keeps working, sessions and
new logins alike, for the whole overlap window; retiring it then locks its role (NOLOGIN
and a random password nobody knows) and terminates its sessions. The role is never
dropped: it comes back, with a new password, as version N+1.

Both roles should hold the same privileges. Pass `grant_from` (a group role) and staging
makes each role a member of it; otherwise grant both roles the same privileges yourself.

Which version a role carries is written in its comment (`tether static version=N
staged_at=T credential=ID`), set in the same transaction as its password. That makes the
backend safe against late or repeated calls:

- staging an older version than the role carries, or a role another credential holds,
  is refused (StaticUserConflict) instead of rolling a newer password back;
- retiring version N once the role already carries N+2 locks nothing (N's password is
  gone already) and only terminates the sessions that logged in before N+2 was staged,
  which can only have used an older password; `users_of(N)` reports those sessions;
- retiring or asking about a version that was never staged does nothing.

Staging N while N-2 is still valid on the same role (a second rotation inside the overlap,
or an exposure) replaces N-2's password: N-2 stops accepting new logins at once, and its
open sessions stay attributed to N-2 by their login time until `retire(N-2)` ends them.
Attribution compares `backend_start` with the time the new password was set, both on the
server's clock; a login racing the staging transaction's commit by microseconds may be
counted as the newer version.

Privileges: the target's admin needs LOGIN and CREATEROLE (superuser works too). To see
the client address of a role's sessions and to terminate them, a non-superuser admin
takes membership in that role inside a transaction that is always rolled back, so no
membership is left behind (granting the admin `pg_read_all_stats` and
`pg_signal_backend` makes that unnecessary). From PostgreSQL 16 on, a CREATEROLE admin
manages only roles it holds ADMIN OPTION on: automatic for roles Tether creates; for
pre-existing users or a `grant_from` group run `GRANT billing_a TO admin WITH ADMIN
OPTION` (and the same for `billing_b` and the group) once.

The role names must not start with Tether's object prefix (`tether_`): the PostgreSQL
provider's reconciler drops such roles when no lease owns them.

Secrets: passwords reach the server only as SCRAM verifiers computed client-side, and
neither they nor the admin DSN appear in exceptions, logs or reprs; errors are
`PostgresError` (a ProviderError) with the error class and SQLSTATE only, as for every
PostgreSQL call (`_session`). Each call opens one short-lived connection; the backend is
safe to share between threads and replicas (changes to one role are serialised by an advisory lock).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from tether.errors import ConflictError, TetherError
from tether.providers import OBJECT_PREFIX
from tether.static import SecretUse
from tether.targets._target import Target
from tether.targets.postgres import STATIC_KIND
from tether.targets.postgres._session import (
    MAX_IDENTIFIER_BYTES,
    PostgresError,
    admin_session,
    client_uri,
    end_sessions,
    libpq_timeout,
    membership_in,
    new_password,
    scalar,
    verifier,
    with_password,
)

log = logging.getLogger("tether.targets.postgres.static")

_MARK_PREFIX = "tether static "
_MARK = re.compile(
    r"tether static version=(?P<version>[1-9][0-9]*) staged_at=(?P<staged_at>\S+)"
    r" credential=(?P<credential>.+)",
    re.DOTALL,
)

# Sessions of one role, optionally only those that logged in before `before`. Without the
# privileges of the role, pg_stat_activity shows pid, usesysid and application_name but
# NULL for the rest (backend_type and backend_start included); such rows are kept: better
# an alert or a termination too many than an old version's session left unnoticed.
_SESSION_FILTER: LiteralString = (
    " FROM pg_stat_activity WHERE usesysid = %(oid)s AND pid <> pg_backend_pid()"
    " AND backend_type IS DISTINCT FROM 'parallel worker'"
    " AND (%(before)s::timestamptz IS NULL OR backend_start IS NULL"
    "      OR backend_start < %(before)s::timestamptz)"
)
_SESSIONS: LiteralString = (
    "SELECT pid, host(client_addr), client_port, application_name, backend_start, state,"
    " datname" + _SESSION_FILTER + " ORDER BY pid"
)
_TERMINATE: LiteralString = "SELECT pid, pg_terminate_backend(pid)" + _SESSION_FILTER


class InvalidStaticBackend(TetherError):
    """The backend's configuration cannot work (bad or clashing role names). Not retryable."""

    status_code = 422
    code = "invalid_static_backend"


class StaticUserConflict(ConflictError):
    """The role does not carry what the call expects (another credential holds it, a newer
    version is already staged, the users were reordered, or it is the admin itself).
    Nothing was changed; retrying does not help until someone resolves it."""

    code = "static_user_conflict"


@dataclass(frozen=True, slots=True)
class _Mark:
    """What a role's comment says it carries."""

    credential_id: str
    version: int
    staged_at: str  # ISO 8601, server clock, when the version's password was set

    def render(self) -> str:
        return (
            f"{_MARK_PREFIX}version={self.version} staged_at={self.staged_at}"
            f" credential={self.credential_id}"
        )


def _parse_mark(comment: str | None) -> _Mark | None:
    if not comment:
        return None
    match = _MARK.fullmatch(comment)
    if match is None:
        return None
    return _Mark(match["credential"], int(match["version"]), match["staged_at"])


@dataclass(frozen=True, slots=True)
class _Role:
    oid: int
    can_login: bool
    mark: _Mark | None


@dataclass(frozen=True, slots=True)
class _Scope:
    #: None: every session of the role is the version's; else only those older than this.
    before: str | None


def _role_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidStaticBackend(f"{what}: expected a non-empty role name")
    if "\x00" in value or len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidStaticBackend(f"{what}: not a valid PostgreSQL name (≤ 63 bytes, no NUL)")
    if value.startswith(OBJECT_PREFIX):
        raise InvalidStaticBackend(
            f"{what}: {value!r} starts with {OBJECT_PREFIX!r}, which Tether reserves for"
            " per-lease roles (its reconciler would drop it)"
        )
    return value


def _app_label(name: str | None) -> str:
    """application_name is chosen by the client: quote it when it could pass for more."""
    if name and not any(c.isspace() or c in "=\"'" for c in name):
        return name
    return json.dumps(name or "")


class PostgresStaticBackend:
    """A static credential served by two alternating PostgreSQL login roles (StaticBackend).

    Version N uses `users[0]` when N is odd and `users[1]` when N is even. Every method is
    idempotent and raises ProviderError (PostgresError) when the target refuses or cannot
    be reached, StaticUserConflict when the role does not carry what the call expects.
    """

    kind = STATIC_KIND

    def __init__(
        self,
        target: Target,
        users: tuple[str, str],
        *,
        grant_from: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(users, tuple | list) or len(users) != 2:
            raise InvalidStaticBackend("users: expected exactly two role names")
        first = _role_name(users[0], "users[0]")
        second = _role_name(users[1], "users[1]")
        if first == second:
            raise InvalidStaticBackend("users: the two roles must differ")
        if grant_from is not None:
            grant_from = _role_name(grant_from, "grant_from")
            if grant_from in (first, second):
                raise InvalidStaticBackend("grant_from: must be a group role, not one of users")
        self.users: tuple[str, str] = (first, second)
        self.grant_from = grant_from
        self.target = target
        self._connect_timeout = libpq_timeout(connect_timeout)

    def __repr__(self) -> str:
        return (
            f"PostgresStaticBackend(target={self.target.name!r}, users={self.users!r}, "
            f"grant_from={self.grant_from!r})"
        )

    def user_for(self, version: int) -> str:
        """The role of a version: users[0] for odd versions, users[1] for even ones."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"version must be an integer ≥ 1, not {version!r}")
        return self.users[(version - 1) % 2]

    # -- StaticBackend ---------------------------------------------------------------------

    def stage(self, credential_id: str, version: int, secret: str) -> Mapping[str, str]:
        user = self._user(version, None)
        ident = sql.Identifier(user)
        with self._session(f"stage v{version} ({user})") as conn:
            with conn.transaction():
                self._lock(conn, user)
                role = self._role(conn, credential_id, user)
                mark = None if role is None else role.mark
                if mark is not None:
                    self._check_parity(mark, version, user)
                    if mark.version > version:
                        raise StaticUserConflict(
                            f"static credential {credential_id}: role {user} already carries"
                            f" version {mark.version}; refusing to stage older version {version}"
                        )
                if role is not None and role.can_login and mark and mark.version < version:
                    log.warning(
                        "static postgres version staged over one still valid; its"
                        " sessions remain until it is retired",
                        extra={
                            "target": self.target.name,
                            "credential_id": credential_id,
                            "role": user,
                            "replaced_version": mark.version,
                            "version": version,
                        },
                    )
                if role is None:
                    conn.execute(
                        sql.SQL(
                            "CREATE ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE"
                            " NOREPLICATION NOBYPASSRLS PASSWORD {} VALID UNTIL 'infinity'"
                        ).format(ident, verifier(conn, secret))
                    )
                else:
                    # Only this role: the other one may be the version in use right now.
                    conn.execute(
                        sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL 'infinity'").format(
                            ident, verifier(conn, secret)
                        )
                    )
                if mark is not None and mark.version == version:
                    staged_at = mark.staged_at  # a retry: its sessions stay its own
                else:
                    now = scalar(conn, "SELECT clock_timestamp()")
                    staged_at = now.astimezone(dt.UTC).isoformat()
                conn.execute(
                    sql.SQL("COMMENT ON ROLE {} IS {}").format(
                        ident, sql.Literal(_Mark(credential_id, version, staged_at).render())
                    )
                )
                if self.grant_from is not None:
                    self._join_group(conn, user, self.grant_from)
                dbname = scalar(conn, "SELECT current_database()")
            host, port = conn.info.host, conn.info.port
            sslmode = conn.info.get_parameters().get("sslmode")
        log.info(
            "static postgres version staged",
            extra={
                "target": self.target.name,
                "credential_id": credential_id,
                "version": version,
                "role": user,
                "role_created": role is None,
            },
        )
        return {
            "username": user,
            "host": host,
            "port": str(port),
            "dbname": dbname,
            "dsn": client_uri(user, host, port, dbname, sslmode),
        }

    def test(
        self, credential_id: str, version: int, secret: str, details: Mapping[str, str]
    ) -> None:
        user = self._user(version, details)
        op = f"test v{version} ({user})"
        try:
            dsn = with_password(self.target.dsn, user, secret)
        except (psycopg.Error, ValueError):
            # The DSN could not be rewritten; its text (and the exception's) stays out.
            raise PostgresError(
                f"postgres target {self.target.name!r}: {op}: malformed target DSN",
                "InvalidDsn",
            ) from None
        with self._session(op, dsn) as conn:
            who = scalar(conn, "SELECT session_user")
        if who != user:
            raise PostgresError(
                f"postgres target {self.target.name!r}: {op}: logged in as {who!r}",
                "WrongUser",
            )

    def retire(self, credential_id: str, version: int, details: Mapping[str, str]) -> None:
        user = self._user(version, details)
        with self._session(f"retire v{version} ({user})") as conn:
            with conn.transaction():
                self._lock(conn, user)
                role = self._role(conn, credential_id, user)
                if role is None:
                    return  # nothing can log in as a role that does not exist
                scope = self._scope(role, version, user)
                if scope is None:
                    return  # the version never reached this role
                before = scope.before
                if before is None:
                    # A password nobody knows, NOLOGIN and an expiry in the past: three
                    # locks, each enough on its own. Stage opens all three again.
                    conn.execute(
                        sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD {} VALID UNTIL '-infinity'").format(
                            sql.Identifier(user), verifier(conn, new_password())
                        )
                    )
            terminated = self._terminate(conn, role.oid, user, before)
        log.info(
            "static postgres version retired",
            extra={
                "target": self.target.name,
                "credential_id": credential_id,
                "version": version,
                "role": user,
                "role_locked": before is None,
                "sessions_terminated": terminated,
            },
        )

    def users_of(
        self, credential_id: str, version: int, details: Mapping[str, str]
    ) -> Sequence[SecretUse]:
        user = self._user(version, details)
        with self._session(f"users_of v{version} ({user})") as conn:
            role = self._role(conn, credential_id, user)
            if role is None:
                return ()
            scope = self._scope(role, version, user)
            if scope is None:
                return ()
            before = scope.before
            with conn.transaction(force_rollback=True):
                visible = self._borrow(conn, role.oid, user, need=("pg_read_all_stats",))
                rows = conn.execute(_SESSIONS, {"oid": role.oid, "before": before}).fetchall()
        uses = []
        for pid, addr, port, app, started, state, dbname in rows:
            where = addr if addr is not None else ("local" if visible else "unknown")
            info = {
                "pid": str(pid),
                "username": user,
                "version": str(version),
                "application_name": app or "",
                "client_addr": where,
            }
            if port is not None:
                info["client_port"] = str(port)
            if started is not None:
                info["backend_start"] = started.astimezone(dt.UTC).isoformat()
            if state is not None:
                info["state"] = state
            if dbname is not None:
                info["dbname"] = dbname
            uses.append(SecretUse(caller=f"{where} app={_app_label(app)} pid={pid}", details=info))
        return uses

    # -- internals -------------------------------------------------------------------------

    def _user(self, version: int, details: Mapping[str, str] | None) -> str:
        user = self.user_for(version)
        named = None if details is None else details.get("username")
        if named is not None and named != user:
            raise StaticUserConflict(
                f"version {version} was staged on role {named!r}, but maps to {user!r} now;"
                " were the users changed or reordered?"
            )
        return user

    @staticmethod
    def _lock(conn: psycopg.Connection[Any], user: str) -> None:
        """Serialise stage and retire of one role across callers (transaction-scoped)."""
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ["tether static " + user]
        )

    def _role(self, conn: psycopg.Connection[Any], credential_id: str, user: str) -> _Role | None:
        row = conn.execute(
            "SELECT oid, rolcanlogin, shobj_description(oid, 'pg_authid'),"
            " rolname IN (session_user, current_user)"
            " FROM pg_roles WHERE rolname = %s",
            [user],
        ).fetchone()
        if row is None:
            return None
        oid, can_login, comment, is_admin = row
        if is_admin:
            raise StaticUserConflict(
                f"role {user} is the one Tether administers target {self.target.name!r} with;"
                " refusing to manage it as a static credential"
            )
        mark = _parse_mark(comment)
        if mark is not None and mark.credential_id != credential_id:
            raise StaticUserConflict(
                f"role {user} is held by static credential {mark.credential_id!r}, not"
                f" {credential_id!r}; clear its comment to hand it over"
            )
        return _Role(oid=int(oid), can_login=bool(can_login), mark=mark)

    @staticmethod
    def _check_parity(mark: _Mark, version: int, user: str) -> None:
        if (mark.version - version) % 2:
            raise StaticUserConflict(
                f"role {user} carries version {mark.version}, which maps to the other role;"
                " were the users reordered?"
            )

    def _scope(self, role: _Role, version: int, user: str) -> _Scope | None:
        """Which of the role's sessions belong to `version`: all of them when it carries
        the version (or bears no mark), those older than the later version's staging when
        it has moved on; None when the version never reached the role."""
        mark = role.mark
        if mark is None or mark.version == version:
            return _Scope(before=None)
        self._check_parity(mark, version, user)
        if mark.version < version:
            return None
        return _Scope(before=mark.staged_at)

    @staticmethod
    def _join_group(conn: psycopg.Connection[Any], user: str, group: str) -> None:
        row = conn.execute(
            "SELECT g.oid, EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles u"
            "  ON u.oid = m.member WHERE m.roleid = g.oid AND u.rolname = %s)"
            " FROM pg_roles g WHERE g.rolname = %s",
            [user, group],
        ).fetchone()
        if row is None:
            raise StaticUserConflict(f"grant_from: group role {group} does not exist")
        if not row[1]:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user))
            )

    @staticmethod
    def _borrow(
        conn: psycopg.Connection[Any], oid: int, user: str, *, need: tuple[str, ...]
    ) -> bool:
        """Make the admin able to act on `user`'s sessions for the current transaction,
        which the caller always rolls back: either it already has the privileges of the
        role (or superuser, or every predefined role in `need`), or it takes membership
        in the role here. True when session details are visible; False when the
        membership was refused (then only pid and application_name are)."""
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        row = conn.execute(
            "SELECT pg_has_role(current_user, %s::oid, 'USAGE'),"
            " pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),"
            " pg_has_role(current_user, 'pg_signal_backend', 'USAGE')",
            [oid],
        ).fetchone()
        assert row is not None
        member, read_all_stats, signal_backend = row
        granted = {"pg_read_all_stats": read_all_stats, "pg_signal_backend": signal_backend}
        if member or all(granted[name] for name in need):
            return True
        grant = membership_in(conn, user)
        if "pg_signal_backend" in need:
            conn.execute(grant)  # terminating cannot do without it: let the error out
            return True
        try:
            with conn.transaction():  # a savepoint: a refusal leaves the outer one usable
                conn.execute(grant)
        except psycopg.errors.InsufficientPrivilege:
            log.warning(
                "cannot see client addresses of a static role's sessions; grant the admin"
                " pg_read_all_stats, or ADMIN OPTION on the role",
                extra={"role": user},
            )
            return False
        return True

    def _terminate(
        self, conn: psycopg.Connection[Any], oid: int, user: str, before: str | None
    ) -> int:
        """Terminate the role's sessions (those older than `before`, if given) until none
        is left, bounded; the number of pids signalled. Each pass is its own transaction,
        rolled back (it only borrows membership), so it sees pg_stat_activity afresh."""

        def signal() -> list[int]:
            with conn.transaction(force_rollback=True):
                self._borrow(conn, oid, user, need=("pg_signal_backend", "pg_read_all_stats"))
                rows = conn.execute(_TERMINATE, {"oid": oid, "before": before}).fetchall()
            return [int(pid) for pid, _ in rows]

        return end_sessions(signal, target=self.target, role=user, then="will retry")

    def _session(
        self, op: str, dsn: str | None = None
    ) -> AbstractContextManager[psycopg.Connection[Any]]:
        return admin_session(self.target, op, connect_timeout=self._connect_timeout, dsn=dsn)
