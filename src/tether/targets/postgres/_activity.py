"""Usage evidence from PostgreSQL: live sessions (`pg_stat_activity`) of Tether's
per-lease roles and of given static roles, and which roles can still log in.

Visibility: pg_stat_activity shows a session's client address and start time only to a
superuser, a member of `pg_read_all_stats`, or a role holding the session's role's
privileges. A CREATEROLE admin has none of these for the roles it made (from 16 on its
automatic membership does not inherit), so, like the static backend, it takes membership
in each role whose sessions are hidden inside a transaction that is always rolled back;
where that is refused the session is still reported, with `source` and `started_at`
None. Granting the admin `pg_read_all_stats` makes the borrowing unnecessary.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from typing import Any, LiteralString

import psycopg

from tether.providers import OBJECT_PREFIX
from tether.targets._sessions import LOCAL_SOURCE, TargetSession
from tether.targets._target import Target
from tether.targets.postgres._session import membership_in

log = logging.getLogger("tether.targets.postgres")

# Client sessions (not our own) of prefixed roles other than the admin, and of the static
# roles. A hidden row has NULL backend_type, so it is kept; parallel workers are not
# sessions of their own. The admin is never a lease's role, even if its name is prefixed.
_MATCH: LiteralString = (
    " FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid()"
    " AND (a.backend_type = 'client backend' OR a.backend_type IS NULL)"
    " AND ((left(a.usename, %(n)s) = %(prefix)s AND a.usename <> session_user)"
    "      OR a.usename::text = ANY(%(static)s::text[]))"
)
_HIDDEN: LiteralString = (
    "SELECT DISTINCT a.usesysid, a.usename" + _MATCH + " AND a.backend_start IS NULL"
)
_SESSIONS: LiteralString = (
    "SELECT a.usename, shobj_description(a.usesysid, 'pg_authid'), a.application_name,"
    " host(a.client_addr), a.backend_start" + _MATCH + " ORDER BY a.usename, a.backend_start"
)


def sample_sessions(
    conn: psycopg.Connection[Any],
    target: Target,
    static_users: Collection[str],
    lease_id_of: Callable[[str, str | None], str | None],
) -> list[TargetSession]:
    """The sessions, read in one transaction (so both reads see the same snapshot of
    pg_stat_activity) that is rolled back, taking any borrowed membership with it.
    `lease_id_of(role, comment)` maps a prefixed role to its lease id, or None."""
    params = {"n": len(OBJECT_PREFIX), "prefix": OBJECT_PREFIX, "static": sorted(static_users)}
    with conn.transaction(force_rollback=True):
        hidden = conn.execute(_HIDDEN, params).fetchall()
        refused = [role for oid, role in hidden if not _borrow(conn, int(oid), role)]
        rows = conn.execute(_SESSIONS, params).fetchall()
    if refused:
        log.warning(
            "cannot see client addresses of some sessions; grant the admin"
            " pg_read_all_stats, or ADMIN OPTION on the roles",
            extra={"target": target.name, "roles": sorted(refused)},
        )
    sessions = []
    for user, comment, app, addr, started in rows:
        # Hidden from us (no start time either): not known, rather than a guess. Shown
        # without an address: a Unix socket.
        source = None if started is None else (addr or LOCAL_SOURCE)
        sessions.append(
            TargetSession(
                target=target.name,
                user=user,
                lease_id=lease_id_of(user, comment) if user.startswith(OBJECT_PREFIX) else None,
                application=app or None,
                source=source,
                started_at=None if started is None else started.astimezone(dt.UTC),
            )
        )
    return sessions


def _borrow(conn: psycopg.Connection[Any], oid: int, role: str) -> bool:
    """Take the privileges of `role` for the current (rolled back) transaction, if not
    held already; False when the target refuses."""
    held = conn.execute("SELECT pg_has_role(current_user, %s::oid, 'USAGE')", [oid]).fetchone()
    if held is not None and held[0]:
        return True
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the outer one usable
            conn.execute(membership_in(conn, role))
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidGrantOperation):
        # Not the admin's role to manage, or a member of the admin already (a cycle).
        return False
    return True


def usable_users(conn: psycopg.Connection[Any], users: Collection[str]) -> set[str]:
    """The roles among `users` that exist, have LOGIN, and whose VALID UNTIL (the
    password's expiry) has not passed. Whether a password is set is not asked: trust,
    peer or certificate logins need none. Those also ignore VALID UNTIL, so an expired
    LOGIN role reported unusable may still get in that way where pg_hba allows it."""
    rows = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolname::text = ANY(%s::text[]) AND rolcanlogin"
        " AND (rolvaliduntil IS NULL OR rolvaliduntil > clock_timestamp())",
        [sorted(users)],
    ).fetchall()
    return {str(name) for (name,) in rows}
