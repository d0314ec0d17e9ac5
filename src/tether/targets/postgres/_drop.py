"""Revoking a per-lease role completely: no logins, no privileges, no sessions, no role."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from tether.targets._target import Target
from tether.targets.postgres._session import end_sessions, lock_privileges, membership_in, scalar

log = logging.getLogger("tether.targets.postgres")


def role_oid(conn: psycopg.Connection[Any], role: str) -> int | None:
    row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    return None if row is None else int(row[0])


def drop_role(conn: psycopg.Connection[Any], target: Target, role: str) -> bool:
    """Revoke a role completely; False when it did not exist (already revoked).

    The order closes every door before the next step: no new logins, then no
    privileges for sessions still running, then no sessions, then no role. Owned
    objects are cleaned up only once its sessions are gone, because dropping them
    could wait on locks those sessions hold.
    """
    oid = role_oid(conn, role)
    if oid is None:
        return False
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
    _revoke_privileges(conn, ident, oid)
    # A CREATEROLE admin that is not superuser may signal and clean up after a role
    # only with that role's privileges: take membership in it (it is about to go).
    if not scalar(conn, "SELECT pg_has_role(current_user, %s::oid, 'USAGE')", oid):
        conn.execute(membership_in(conn, role))
    terminated = _terminate(conn, target, oid, role)
    with conn.transaction():
        lock_privileges(conn)
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))
    _sweep(conn, target, oid, role)
    log.info(
        "postgres role dropped",
        extra={"target": target.name, "role": role, "sessions_terminated": terminated},
    )
    return True


def _revoke_privileges(conn: psycopg.Connection[Any], ident: sql.Identifier, oid: int) -> None:
    """Take back what the role holds here, so a session still running between now and
    its termination can read nothing more. REVOKE takes no lock on the tables."""
    with conn.transaction():
        lock_privileges(conn)
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


def _terminate(conn: psycopg.Connection[Any], target: Target, oid: int, role: str) -> int:
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

    return end_sessions(signal, target=target, role=role, then="role kept with NOLOGIN, will retry")


def _sweep(conn: psycopg.Connection[Any], target: Target, oid: int, role: str) -> None:
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
            extra={"target": target.name, "role": role},
        )
        return
    if rows:
        log.warning(
            "postgres session of a dropped role terminated",
            extra={"target": target.name, "role": role, "sessions": len(rows)},
        )
