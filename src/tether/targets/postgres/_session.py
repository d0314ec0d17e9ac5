"""What every PostgreSQL call of Tether's shares: the admin connection, the errors it
raises, passwords and their verifiers, DSN rewriting and ending a role's sessions.

Both the per-lease provider and the static-role backend use these, so there is one way
to reach a target and one way its errors leave: as a PostgresError naming the operation,
the psycopg error class and the SQLSTATE only (libpq and server messages may quote
connection strings and statements). Passwords reach the server only as SCRAM verifiers
computed client-side, so no statement (and no server log of it) holds one.

Connections: each session is one short-lived autocommit connection, closed at the end;
nothing is pooled or held, so callers are safe to share between threads.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, LiteralString
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tether.providers import ProviderError
from tether.targets._target import Target
from tether.targets.postgres import KIND

#: PostgreSQL truncates longer identifiers silently, which would change their meaning.
MAX_IDENTIFIER_BYTES = 63
#: The URI schemes libpq reads as a connection URI (anything else is key=value conninfo).
URI_SCHEMES = KIND.dsn_schemes

_STATEMENT_TIMEOUT_MS = 30_000
#: Short: a revocation that waits on a lock is retried rather than stalling the worker.
_LOCK_TIMEOUT_MS = 10_000
#: How long ending a role's sessions waits for them to go away before it reports failure.
_TERMINATE_WAIT_S = 10.0


class PostgresError(ProviderError):
    """The target refused or could not be reached. Carries only the error class and
    SQLSTATE: the server's own message may quote connection strings or statements."""

    def __init__(self, message: str, error: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.sqlstate = sqlstate


def describe(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f", SQLSTATE {state}" if state else "")


def libpq_timeout(seconds: float) -> int:
    # libpq takes whole seconds (and treats anything below 2 as 2).
    return max(1, math.ceil(seconds))


@contextmanager
def admin_session(
    target: Target, op: str, *, connect_timeout: int, dsn: str | None = None
) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit connection to `target` (as its admin, unless `dsn` says otherwise);
    any psycopg error leaves as a PostgresError that names the operation, the error class
    and the SQLSTATE, and nothing else."""
    try:
        conn = psycopg.connect(
            dsn if dsn is not None else target.dsn,
            autocommit=True,
            connect_timeout=connect_timeout,
            application_name="tether",
        )
    except psycopg.Error as exc:
        # Unreachable, refused login or a malformed DSN; libpq's text may quote the DSN.
        raise _error(target, f"{op}: cannot connect", exc) from None
    try:
        with conn:
            conn.execute(
                f"SET statement_timeout = {_STATEMENT_TIMEOUT_MS};"
                f" SET lock_timeout = {_LOCK_TIMEOUT_MS}"
            )
            yield conn
    except psycopg.Error as exc:
        # `from None`: the psycopg exception's text stays out of tracebacks too.
        raise _error(target, f"{op} failed", exc) from None


def _error(target: Target, what: str, exc: psycopg.Error) -> PostgresError:
    return PostgresError(
        f"postgres target {target.name!r}: {what} ({describe(exc)})",
        type(exc).__name__,
        exc.sqlstate,
    )


def scalar(conn: psycopg.Connection[Any], query: LiteralString, *params: object) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]


def lock_privileges(conn: psycopg.Connection[Any]) -> None:
    """Serialize, until the transaction ends, Tether's changes to privileges in this
    database: two sessions granting on (or revoking from) the same database, schema or
    table at once fail with "tuple concurrently updated" (every node and thread issues
    and revokes, so they would). An advisory lock needs no privilege of its own."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('tether privileges', 0))")


def membership_in(conn: psycopg.Connection[Any], role: str) -> sql.Composed:
    """The statement making the admin a member of `role` with its privileges: what a
    CREATEROLE admin that is not superuser needs to see and end the role's sessions."""
    # From 16 on, the creator's automatic membership does not inherit privileges.
    inherit = " WITH INHERIT TRUE" if conn.info.server_version >= 160000 else ""
    return sql.SQL("GRANT {} TO CURRENT_USER" + inherit).format(sql.Identifier(role))


def new_password() -> str:
    # 256 bits, URL-safe alphabet: usable in a URI without escaping.
    return secrets.token_urlsafe(32)


def verifier(conn: psycopg.Connection[Any], password: str) -> sql.Composable:
    """The SCRAM verifier of a password, computed by libpq on this side: the plaintext never
    appears in a statement, in pg_stat_activity or in a server log."""
    encrypted = conn.pgconn.encrypt_password(password.encode(), b"", b"scram-sha-256")
    return sql.Literal(encrypted.decode("ascii"))


def with_password(dsn: str, user: str, password: str) -> str:
    """The same connection string logging in as `user` with `password` (a URI stays one)."""
    if dsn.startswith(URI_SCHEMES):
        parts = urlsplit(dsn)
        hosts = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
        # The rest of the query is kept byte for byte: re-encoding would turn spaces into
        # "+", which libpq reads literally (e.g. in `options=-c%20...`).
        query = "&".join(
            item
            for item in parts.query.split("&")
            if item and unquote(item.partition("=")[0]) not in {"user", "password"}
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return make_conninfo(dsn, user=user, password=password)


def client_uri(user: str, host: str, port: int, dbname: str, sslmode: str | None) -> str:
    """A libpq URI for `user` on this server, without a password."""
    if host.startswith("/"):  # a Unix socket directory travels percent-encoded
        host_part = quote(host, safe="")
    elif ":" in host:  # IPv6
        host_part = f"[{host}]"
    else:
        host_part = host
    uri = f"{URI_SCHEMES[0]}{quote(user, safe='')}@{host_part}:{port}/{quote(dbname, safe='')}"
    if sslmode:
        uri += "?" + urlencode({"sslmode": sslmode})
    return uri


def end_sessions(
    signal: Callable[[], Collection[int]], *, target: Target, role: str, then: str
) -> int:
    """Call `signal` (which terminates the role's sessions it still sees and returns their
    pids) until it sees none, bounded; the number of pids signalled. Raises PostgresError
    ("... survive termination; <then>") if any survives, so the caller retries rather than
    go on as if the role's sessions were gone."""
    deadline = time.monotonic() + _TERMINATE_WAIT_S
    delay = 0.01
    signalled: set[int] = set()
    while True:
        pids = signal()
        if not pids:
            return len(signalled)
        signalled.update(pids)
        if time.monotonic() >= deadline:
            raise PostgresError(
                f"postgres target {target.name!r}: {len(pids)} session(s) of role"
                f" {role} survive termination; {then}",
                "SessionsSurvived",
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
