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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tether.model import Identity, Lease, Profile
from tether.providers import OBJECT_PREFIX, IssuedCredential, ProviderError
from tether.targets._target import Target
from tether.targets.errors import InvalidGrants
from tether.targets.postgres import NAME
from tether.targets.postgres._grants import DEFAULT_GRANTS, PRIVILEGE_SQL, Grant, parse_grants
from tether.targets.postgres._session import (
    MAX_IDENTIFIER_BYTES,
    PostgresError,
    admin_session,
    client_uri,
    describe,
    end_sessions,
    libpq_timeout,
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
            if self._role_oid(conn, role) is not None:
                # A retry after a crash: the earlier password may have been handed out, so
                # the old role goes (sessions included) rather than being reused.
                self._drop_role(conn, role)
            dbname = scalar(conn, "SELECT current_database()")
            with conn.transaction():
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
            self._drop_role(conn, self.object_name(lease))

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
                    self._drop_role(conn, role)
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

    # -- internals -------------------------------------------------------------------------

    def _session(
        self, op: str, dsn: str | None = None
    ) -> AbstractContextManager[psycopg.Connection[Any]]:
        return admin_session(self.target, op, connect_timeout=self._connect_timeout, dsn=dsn)

    @staticmethod
    def _role_oid(conn: psycopg.Connection[Any], role: str) -> int | None:
        row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        return None if row is None else int(row[0])

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

    def _drop_role(self, conn: psycopg.Connection[Any], role: str) -> bool:
        """Revoke a role completely; False when it did not exist (already revoked).

        The order closes every door before the next step: no new logins, then no
        privileges for sessions still running, then no sessions, then no role. Owned
        objects are cleaned up only once its sessions are gone, because dropping them
        could wait on locks those sessions hold.
        """
        oid = self._role_oid(conn, role)
        if oid is None:
            return False
        ident = sql.Identifier(role)
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        self._revoke_privileges(conn, ident, oid)
        # A CREATEROLE admin that is not superuser may signal and clean up after a role
        # only with that role's privileges: take membership in it (it is about to go).
        if not scalar(conn, "SELECT pg_has_role(current_user, %s::oid, 'USAGE')", oid):
            # From 16 on, the creator's automatic membership does not inherit privileges.
            inherit = " WITH INHERIT TRUE" if conn.info.server_version >= 160000 else ""
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER" + inherit).format(ident))
        terminated = self._terminate(conn, oid, role)
        with conn.transaction():
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
        self._sweep(conn, oid, role)
        log.info(
            "postgres role dropped",
            extra={"target": self.target.name, "role": role, "sessions_terminated": terminated},
        )
        return True

    @staticmethod
    def _revoke_privileges(conn: psycopg.Connection[Any], ident: sql.Identifier, oid: int) -> None:
        """Take back what the role holds here, so a session still running between now and
        its termination can read nothing more. REVOKE takes no lock on the tables."""
        with conn.transaction():
            dbname = scalar(conn, "SELECT current_database()")
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(dbname), ident)
            )
            rows = conn.execute(
                "SELECT n.nspname, 'schema' FROM pg_namespace n"
                " WHERE EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a WHERE a.grantee = %(r)s)"
                " UNION SELECT n.nspname, CASE WHEN c.relkind = 'S' THEN 'sequences'"
                "  ELSE 'tables' END"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = %(r)s)",
                {"r": oid},
            ).fetchall()
            for schema, kind in rows:
                target = {
                    "schema": sql.SQL("SCHEMA {}"),
                    "tables": sql.SQL("ALL TABLES IN SCHEMA {}"),
                    "sequences": sql.SQL("ALL SEQUENCES IN SCHEMA {}"),
                }[kind].format(sql.Identifier(schema))
                conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(target, ident))

    def _terminate(self, conn: psycopg.Connection[Any], oid: int, role: str) -> int:
        """Terminate the role's backends until none is left (bounded); the count of pids
        signalled. Raises ProviderError if any survives, so the role is not dropped under a
        live session (which would then keep running as a nameless role)."""

        def signal() -> list[int]:
            rows = conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usesysid = %s AND pid <> pg_backend_pid()",
                [oid],
            ).fetchall()
            return [int(pid) for pid, _ in rows]

        return end_sessions(
            signal, target=self.target, role=role, then="role kept with NOLOGIN, will retry"
        )

    def _sweep(self, conn: psycopg.Connection[Any], oid: int, role: str) -> None:
        """A login that passed authentication just before NOLOGIN, yet showed up only after
        the last check, would outlive the role. Terminate it by the dropped role's oid."""
        try:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usesysid = %s AND pid <> pg_backend_pid()",
                [oid],
            ).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            # Only superuser or pg_signal_backend may signal a role that no longer exists.
            log.error(
                "postgres session outlived its dropped role; grant pg_signal_backend to the"
                " admin so Tether can end it",
                extra={"target": self.target.name, "role": role},
            )
            return
        if rows:
            log.warning(
                "postgres session of a dropped role terminated",
                extra={"target": self.target.name, "role": role, "sessions": len(rows)},
            )

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
