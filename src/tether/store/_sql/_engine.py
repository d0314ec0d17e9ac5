"""Opening the SQL database: the engine, and the migration that makes it Tether's.

Errors here are the first a new user meets (a wrong TETHER_DATABASE_URL), so they name the
database (never its password) and the cause, in Tether's words.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from tether.store._sql import tables as t
from tether.store.errors import ForeignSchema, StoreError, StoreUnreachable

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).parent / "migrations"
_VERSION_TABLE = "alembic_version"
_VERSIONS: sa.Select[Any] = sa.select(sa.column("version_num")).select_from(
    sa.table(_VERSION_TABLE)
)
#: How many foreign tables a refusal names before it says "and N more".
_NAMED = 5


def _engine_url(url: str) -> str:
    # Plain postgresql:// URLs mean psycopg 3, the only PostgreSQL driver Tether ships.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_TAKES = "Tether keeps its state in SQLite (sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST:PORT/DB)"


def create_engine(url: str) -> Engine:
    """The engine for `url`; one Tether cannot use is a `StoreError` naming what it takes."""
    try:
        backend = sa.engine.make_url(url).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):
        # Not the exception's text: SQLAlchemy's quotes the URL, password and all.
        raise StoreError(f"the database URL is not a valid URL. {_TAKES}") from None
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise StoreError(f"cannot use the database {shown_url(url)}. {_TAKES}")
    try:
        return _create_engine(_engine_url(url))
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        raise StoreError(
            f"cannot use the database {shown_url(url)}: {type(exc).__name__}"
        ) from None


# Connections kept open per process. The request path runs in a thread pool of 40
# (Starlette's), and a connection beyond the pool is opened and closed per use: on SQLite
# that re-runs the PRAGMAs under a lock, on PostgreSQL it costs a TCP and auth round trip.
_SQLITE_POOL = 48
# PostgreSQL's connections are the cluster's to share: a node's writers share one
# transaction per round (group commit), so fewer suffice.
_PG_POOL = 20


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=_SQLITE_POOL,
            max_overflow=_SQLITE_POOL // 2,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so BEGIN IMMEDIATE is ours to send.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("tether_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return sa.create_engine(url, pool_size=_PG_POOL, max_overflow=_PG_POOL, pool_pre_ping=True)


def shown_url(url: str) -> str:
    """The database URL as it may be printed: no password, no query (it may hold one)."""
    try:
        parsed = sa.engine.make_url(_masked(url))
    except (sa.exc.ArgumentError, ValueError):
        return "(TETHER_DATABASE_URL)"
    return str(parsed.set(password=None, query={}).render_as_string(hide_password=True))


def _masked(url: str) -> str:
    """`url` with everything between the user name and the authority's LAST `@` masked:
    a password with an unencoded `@` in it is still all password, not part of the host."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def _cause(url: str, exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's reason in one line, with the password taken out should it appear."""
    text = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    reason = first.rpartition(" failed: ")[2].removeprefix("FATAL:").strip()
    for secret in sorted(_password_parts(url), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return reason[:1].lower() + reason[1:]


def _password_parts(url: str) -> set[str]:
    """The password as the driver may quote it: whole, as SQLAlchemy reads it, and each
    piece of it between unencoded `@`s (which a driver may take for part of the host)."""
    authority = url.partition("://")[2].partition("/")[0]
    raw = authority.rpartition("@")[0].partition(":")[2]
    parts = {raw, *raw.split("@")}
    with contextlib.suppress(sa.exc.ArgumentError, ValueError):
        parts.add(sa.engine.make_url(url).password or "")
    return {p for p in parts if p}


def _check_schema(conn: Connection, url: str, allow_existing: bool, config: Config) -> None:
    """Refuse to migrate into a database that holds someone else's tables (unless told to).

    Tether's own database is recognized by its Alembic history; an empty one is new. Anything
    else belongs to another application, and Tether's tables would land among its tables.
    """
    names = set(sa.inspect(conn).get_table_names())
    if not names:
        return
    where = shown_url(url)
    if _VERSION_TABLE in names:
        from alembic.script import ScriptDirectory

        scripts = ScriptDirectory.from_config(config)
        known = {script.revision for script in scripts.walk_revisions()}
        versions: set[str] = set(conn.execute(_VERSIONS).scalars())
        if versions <= known:
            return
        raise ForeignSchema(
            f"the database {where} holds another application's migration history (Alembic "
            f"revision {', '.join(sorted(versions))}, not Tether's): give Tether a database "
            "of its own"
        )
    if allow_existing:
        return
    foreign = sorted(names - set(t.metadata.tables)) or sorted(names)
    named = ", ".join(foreign[:_NAMED])
    if len(foreign) > _NAMED:
        named += f" and {len(foreign) - _NAMED} more"
    raise ForeignSchema(
        f"the database {where} already holds tables ({named}) and no Tether migration "
        "history: they belong to another application, so Tether will not migrate into it. "
        "Give Tether a database "
        "of its own, or pass --allow-existing-schema (TETHER_ALLOW_EXISTING_SCHEMA=1) to add "
        "Tether's tables beside them"
    )


def _head() -> str:
    """The newest revision: migrations are one line, each file named by its revision."""
    return max(p.name.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _at_head(conn: Connection) -> bool:
    """Whether the database already is at the newest revision: then a start (each worker
    of a node, after its supervisor migrated) need not load Alembic at all."""
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return False
    versions = list(conn.execute(_VERSIONS).scalars())
    conn.rollback()
    return versions == [_head()]


def migrate(engine: Engine, url: str, *, allow_existing_schema: bool = False) -> None:
    """Bring the schema to the newest version; a database that cannot be opened, or that
    belongs to another application, is a `StoreError` naming it."""
    # Alembic announces each of its plugins at INFO when it is first imported: noise, not
    # news. Imported here, after the level is set, so that a start logs only what matters.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        with engine.connect() as conn:
            if _at_head(conn):
                return
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            _check_schema(conn, url, allow_existing_schema, config)
            conn.commit()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise StoreUnreachable(
            f"cannot open the database {shown_url(url)}: {_cause(url, exc)}"
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        # Only the class: a failed statement's message would carry its parameters.
        failure = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        raise StoreError(
            f"cannot migrate the database {shown_url(url)}: {type(failure).__name__}"
        ) from None
