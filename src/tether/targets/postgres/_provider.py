"""PostgreSQL credentials: one login role per lease, dropped together with its sessions.

Every lease gets its own role (`tether_<lease id>`), created with a random password that
expires with the lease (`VALID UNTIL`) and the grants of its profile. Revocation makes the
role unable to log in, strips its privileges, terminates its live backends and drops it.

Secrets: the admin DSN and every password stay out of exceptions, logs and reprs; the
connection, error and password handling is `_session`'s, shared with the static backend.
Each call opens one short-lived connection, so the provider is safe to share between
threads. A PostgreSQL admin needs LOGIN and CREATEROLE (superuser works too), must own or
hold GRANT OPTION on the schemas and tables it grants, and must be allowed to grant CONNECT
on the database (owning it suffices).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tether.model import Identity, Lease, Profile
from tether.providers import OBJECT_PREFIX, IssuedCredential, ProviderError
from tether.targets._sessions import TargetSession
from tether.targets._target import Target
from tether.targets.errors import InvalidGrants
from tether.targets.postgres import NAME, _activity
from tether.targets.postgres._drop import drop_role, role_oid
from tether.targets.postgres._grants import DEFAULT_GRANTS, PRIVILEGE_SQL, Grant, parse_grants
from tether.targets.postgres._session import (
    MAX_IDENTIFIER_BYTES,
    PostgresError,
    admin_session,
    client_uri,
    describe,
    libpq_timeout,
    lock_privileges,
    new_password,
    scalar,
    verifier,
    with_password,
)

__all__ = [
    "DEFAULT_GRANTS",
    "TOKEN_TYPE",
    "Grant",
    "InvalidGrants",
    "PostgresError",
    "PostgresProvider",
    "ReconcileIncomplete",
    "parse_grants",
    "role_name",
]

log = logging.getLogger("tether.targets.postgres")

TOKEN_TYPE = "urn:tether:credential:postgres"  # noqa: S105 (a type URI, not a secret)

# Lease ids Tether makes (`lse_<hex>`) are used as they are: the role name reads back to the
# lease id. Anything else (upper case, punctuation, too long) is hashed into a name that
# always contains "__", which a verbatim id never does, so the two forms cannot collide.
_VERBATIM_ID = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*", re.ASCII)
_MAX_VERBATIM = MAX_IDENTIFIER_BYTES - len(OBJECT_PREFIX)
_EXCERPT_CHARS = 30
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+", re.ASCII)
#: The role comment records the lease id exactly, so hashed names map back too.
_COMMENT_PREFIX = "tether lease "

_LIVE_BATCH = 500


class ReconcileIncomplete(ProviderError):
    """Some orphaned roles could not be dropped. `dropped` did happen (audit them);
    `failed` maps each remaining role to its error class and is retried next run."""

    def __init__(self, target: str, dropped: list[str], failed: Mapping[str, str]) -> None:
        super().__init__(
            f"postgres target {target!r}: reconcile dropped {len(dropped)} role(s); "
            f"could not drop {', '.join(f'{k} ({v})' for k, v in sorted(failed.items()))}"
        )
        self.dropped = dropped
        self.failed = dict(failed)


def role_name(lease_id: str) -> str:
    """The role of a lease: a lower-case identifier that needs no quoting, ≤ 63 bytes."""
    if len(lease_id) <= _MAX_VERBATIM and _VERBATIM_ID.fullmatch(lease_id):
        return OBJECT_PREFIX + lease_id
    excerpt = _NOT_NAME_CHARS.sub("_", lease_id.lower()).strip("_")[:_EXCERPT_CHARS].rstrip("_")
    digest = hashlib.sha256(lease_id.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return f"{OBJECT_PREFIX}{excerpt}__{digest}"


def _lease_id_of(role: str, comment: str | None) -> str | None:
    """Map a prefixed role back to its lease id, or None when it is not one of ours."""
    if comment and comment.startswith(_COMMENT_PREFIX):
        lease_id = comment[len(_COMMENT_PREFIX) :]
        # Trust the comment only if it names this very role (only CREATEROLE can set it).
        if role_name(lease_id) == role:
            return lease_id
    suffix = role[len(OBJECT_PREFIX) :]
    if _VERBATIM_ID.fullmatch(suffix):
        return suffix
    return None


def _timestamp(value: dt.datetime) -> str:
    # Lease times are UTC; a naive one is read as UTC rather than as the server's zone.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


class PostgresProvider:
    """Issues one PostgreSQL login role per lease on a registered target (ExternalProvider).

    All methods are idempotent and raise ProviderError (PostgresError) when the target
    refuses or cannot be reached, so the caller retries. Invalid profile grants raise
    InvalidGrants before anything touches the target.
    """

    name = NAME
    external = True

    def __init__(self, target: Target, *, connect_timeout: float = 5.0) -> None:
        self.target = target
        self._connect_timeout = libpq_timeout(connect_timeout)
        self._rotate_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresProvider(target={self.target.name!r})"

    # -- names -----------------------------------------------------------------------------

    def object_name(self, lease: Lease) -> str:
        return role_name(lease.id)

    # -- lifecycle -------------------------------------------------------------------------

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        grants = parse_grants(None if profile is None else profile.grants)
        role = self.object_name(lease)
        ident = sql.Identifier(role)
        password = new_password()
        valid_until = _timestamp(lease.expires_at)
        with self._session("issue") as conn:
            if role_oid(conn, role) is not None:
                # A retry after a crash: the earlier password may have been handed out, so
                # the old role goes (sessions included) rather than being reused.
                drop_role(conn, self.target, role)
            dbname = scalar(conn, "SELECT current_database()")
            with conn.transaction():
                lock_privileges(conn)
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                        " NOBYPASSRLS PASSWORD {} VALID UNTIL {}"
                    ).format(ident, verifier(conn, password), sql.Literal(valid_until))
                )
                conn.execute(
                    sql.SQL("COMMENT ON ROLE {} IS {}").format(
                        ident, sql.Literal(_COMMENT_PREFIX + lease.id)
                    )
                )
                conn.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(dbname), ident
                    )
                )
                for grant in grants:
                    self._grant(conn, ident, grant)
            host, port = conn.info.host, conn.info.port
            sslmode = conn.info.get_parameters().get("sslmode")
        log.info(
            "postgres role created",
            extra={"target": self.target.name, "role": role, "lease_id": lease.id},
        )
        return IssuedCredential(
            secret=password,
            token_type=TOKEN_TYPE,
            extra={
                "username": role,
                "host": host,
                "port": port,
                "dbname": dbname,
                "valid_until": valid_until,
                "dsn": client_uri(role, host, port, dbname, sslmode),
            },
        )

    def renew(self, lease: Lease) -> None:
        with self._session("renew") as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
                    sql.Identifier(self.object_name(lease)),
                    sql.Literal(_timestamp(lease.expires_at)),
                )
            )

    def revoke(self, lease: Lease) -> None:
        with self._session("revoke") as conn:
            drop_role(conn, self.target, self.object_name(lease))

    def reconcile(self, live_lease_ids: Callable[[Sequence[str]], set[str]]) -> list[str]:
        with self._session("reconcile") as conn:
            rows = conn.execute(
                "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles"
                " WHERE left(rolname, %s) = %s AND rolname <> current_user"
                " AND rolname <> session_user ORDER BY rolname",
                [len(OBJECT_PREFIX), OBJECT_PREFIX],
            ).fetchall()
            by_lease: dict[str, str] = {}
            doomed: list[str] = []
            for role, comment in rows:
                if not role.startswith(OBJECT_PREFIX):  # never touch anyone else's role
                    continue
                lease_id = _lease_id_of(role, comment)
                if lease_id is None:
                    doomed.append(role)  # prefixed, yet no lease could own it
                else:
                    by_lease[lease_id] = role
            ids = sorted(by_lease)
            live: set[str] = set()
            for start in range(0, len(ids), _LIVE_BATCH):
                live |= live_lease_ids(ids[start : start + _LIVE_BATCH])
            doomed += [role for lease_id, role in by_lease.items() if lease_id not in live]
            dropped: list[str] = []
            failed: dict[str, str] = {}
            for role in sorted(doomed):
                try:
                    drop_role(conn, self.target, role)
                except (psycopg.Error, ProviderError) as exc:
                    if conn.broken or conn.closed:
                        raise
                    failed[role] = exc.error if isinstance(exc, PostgresError) else describe(exc)
                    continue
                dropped.append(role)
        if dropped:
            log.info(
                "postgres orphan roles dropped",
                extra={"target": self.target.name, "roles": dropped},
            )
        if failed:
            raise ReconcileIncomplete(self.target.name, dropped, failed)
        return dropped

    def rotate_root(self) -> Target:
        # One rotation at a time: two racing ones would leave a password nobody holds.
        with self._rotate_lock:
            target = self.target
            password = new_password()
            with self._session("rotate_root", target.dsn) as conn:
                user = scalar(conn, "SELECT session_user")
                new_dsn = with_password(target.dsn, user, password)
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(user), verifier(conn, password)
                    )
                )
                try:
                    with self._session("rotate_root (verify)", new_dsn) as check:
                        works = scalar(check, "SELECT session_user") == user
                except ProviderError:
                    works = False
                if not works:
                    self._restore_password(conn, target.dsn, user)
                    raise PostgresError(
                        f"postgres target {target.name!r}: rotate_root could not log in with"
                        " the new password; the old one was put back",
                        "RotationUnverified",
                    )
            rotated = Target(name=target.name, kind=target.kind, dsn=new_dsn)
            # The old password no longer works: this provider moves on to the new one, and
            # the caller must persist `rotated` (through the barrier) before anything else.
            self.target = rotated
            log.info("postgres admin password rotated", extra={"target": target.name})
            return rotated

    def health(self) -> Mapping[str, Any]:
        try:
            with self._session("health") as conn:
                row = conn.execute(
                    "SELECT current_setting('server_version'), current_user, current_database(),"
                    " r.rolcreaterole, r.rolsuper,"
                    " (SELECT count(*) FROM pg_roles WHERE left(rolname, %s) = %s)"
                    " FROM pg_roles r WHERE r.rolname = current_user",
                    [len(OBJECT_PREFIX), OBJECT_PREFIX],
                ).fetchone()
                server_version_num = conn.info.server_version
        except PostgresError as exc:
            return {"ok": False, "target": self.target.name, "error": exc.error}
        if row is None:  # current_user always has a pg_roles row; defensive only
            return {"ok": False, "target": self.target.name, "error": "NoAdminRole"}
        version, user, dbname, createrole, superuser, managed = row
        can_administer = bool(createrole or superuser)
        report: dict[str, Any] = {
            "ok": can_administer,
            "target": self.target.name,
            "server_version": version,
            "server_version_num": server_version_num,
            "user": user,
            "dbname": dbname,
            "createrole": bool(createrole),
            "superuser": bool(superuser),
            "managed_roles": int(managed),
        }
        if not can_administer:
            report["error"] = "admin role lacks CREATEROLE"
        return report

    # -- usage evidence (SessionSource) ----------------------------------------------------

    def sample_sessions(self, static_users: Collection[str]) -> list[TargetSession]:
        """Live sessions of the per-lease roles and of `static_users` (`_activity`)."""
        with self._session("sample_sessions") as conn:
            return _activity.sample_sessions(conn, self.target, static_users, _lease_id_of)

    def usable_users(self, users: Collection[str]) -> set[str]:
        """Which of `users` exist with LOGIN and an unexpired VALID UNTIL."""
        if not users:
            return set()
        with self._session("usable_users") as conn:
            return _activity.usable_users(conn, users)

    # -- internals -------------------------------------------------------------------------

    def _session(
        self, op: str, dsn: str | None = None
    ) -> AbstractContextManager[psycopg.Connection[Any]]:
        return admin_session(self.target, op, connect_timeout=self._connect_timeout, dsn=dsn)

    @staticmethod
    def _grant(conn: psycopg.Connection[Any], ident: sql.Identifier, grant: Grant) -> None:
        schema = sql.Identifier(grant.schema)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, ident))
        privileges = sql.SQL(", ").join(PRIVILEGE_SQL[p] for p in grant.privileges)
        if grant.tables is None:
            on: sql.Composable = sql.SQL("ALL TABLES IN SCHEMA {}").format(schema)
        else:
            on = sql.SQL("TABLE {}").format(
                sql.SQL(", ").join(sql.Identifier(grant.schema, t) for t in grant.tables)
            )
        conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(privileges, on, ident))

    def _restore_password(self, conn: psycopg.Connection[Any], dsn: str, user: str) -> None:
        """Undo a rotation that could not be verified, if the old password is known."""
        try:
            old = conninfo_to_dict(dsn).get("password")
        except psycopg.Error:
            old = None
        if old is None:
            log.error(
                "postgres rotate_root: new password unverified and the old one is unknown",
                extra={"target": self.target.name},
            )
            return
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(user), verifier(conn, str(old))
            )
        )
