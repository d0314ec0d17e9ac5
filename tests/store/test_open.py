"""Opening a database: an unreachable one is named (never its password) with the reason, and
a database that holds another application's tables is not migrated into unless asked."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.scenario.harness import free_port
from tests.services import PG_ADMIN_URL, throwaway_postgres_database
from tether.config import Settings
from tether.store import (
    ForeignSchema,
    StoreError,
    StoreUnavailable,
    StoreUnreachable,
    open_store,
    shown_url,
)
from tether.store._sql import tables as t

PASSWORD = "hunter2-do-not-print"  # the secret the messages must not carry


def _migrate(url: str, *, allow_existing_schema: bool = False) -> None:
    store = open_store(url, allow_existing_schema=allow_existing_schema)
    try:
        store.migrate()
    finally:
        store.close()


def _refusal(url: str, expected: type[StoreError], **flags: bool) -> str:
    with pytest.raises(expected) as caught:
        _migrate(url, **flags)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- unreachable --


def test_a_closed_port_names_the_host_and_the_cause_but_not_the_password() -> None:
    port = free_port()
    url = f"postgresql://tether:{PASSWORD}@127.0.0.1:{port}/tether?password={PASSWORD}"
    message = _refusal(url, StoreUnreachable)
    assert f"127.0.0.1:{port}" in message and "/tether" in message
    assert "connection refused" in message
    assert PASSWORD not in message and "OperationalError" not in message
    assert issubclass(StoreUnreachable, StoreUnavailable)  # a 503 like any outage


def test_a_password_with_an_unencoded_at_sign_is_masked_whole() -> None:
    # `user:pa@ss@host`: everything up to the last `@` is the password, so no piece of
    # it may be shown, neither in the URL Tether prints nor in the driver's reason.
    port = free_port()
    url = f"postgresql://tether:{PASSWORD}@x{PASSWORD}@127.0.0.1:{port}/tether"
    assert shown_url(url) == f"postgresql://tether:***@127.0.0.1:{port}/tether"
    message = _refusal(url, StoreUnreachable)
    assert PASSWORD not in message


def test_settings_do_not_show_the_database_url_in_their_repr(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=f"postgresql://u:{PASSWORD}@h/db")
    assert PASSWORD not in repr(settings)


@pytest.mark.service
def test_a_missing_database_on_a_real_server_is_named() -> None:
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/tether_no_such_database"
    with throwaway_postgres_database():  # skips (or fails in CI) without a server
        message = _refusal(url, StoreUnreachable)
    assert 'database "tether_no_such_database" does not exist' in message


def test_an_sqlite_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    message = _refusal(f"sqlite:///{directory}", StoreUnreachable)
    assert str(directory) in message and "unable to open database file" in message


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://tether:{PASSWORD}@db.internal/tether",
        f"postgresql://tether:{PASSWORD}@db.internal:port/tether",
        f"not a url {PASSWORD}",
    ],
)
def test_a_url_tether_cannot_use_says_what_it_takes(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "sqlite:///PATH" in message and "postgresql://" in message
    assert PASSWORD not in message


# -- a database that holds someone else's tables --


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        with throwaway_postgres_database() as url:
            yield url


def _sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    return names


def test_another_applications_tables_are_refused_and_left_alone(empty_url: str) -> None:
    _sql(empty_url, "CREATE TABLE customers (id integer PRIMARY KEY)")
    message = _refusal(empty_url, ForeignSchema)
    assert "customers" in message and "--allow-existing-schema" in message
    assert "TETHER_ALLOW_EXISTING_SCHEMA" in message
    assert _tables(empty_url) == {"customers"}  # nothing was migrated into it


def test_allow_existing_schema_puts_tethers_tables_beside_them(empty_url: str) -> None:
    _sql(empty_url, "CREATE TABLE customers (id integer PRIMARY KEY)")
    _migrate(empty_url, allow_existing_schema=True)
    assert _tables(empty_url) >= {"customers", "alembic_version", *t.metadata.tables}
    # From now on the database carries Tether's history: no flag needed to reopen it.
    _migrate(empty_url)


def test_tethers_own_database_and_an_empty_one_open_without_a_flag(empty_url: str) -> None:
    _migrate(empty_url)
    _migrate(empty_url)
    assert _tables(empty_url) >= set(t.metadata.tables)


def test_another_applications_migration_history_is_refused_even_when_allowed(
    empty_url: str,
) -> None:
    _sql(
        empty_url,
        "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)",
        "INSERT INTO alembic_version VALUES ('f00dfeed1234')",
    )
    for allow in (False, True):
        message = _refusal(empty_url, ForeignSchema, allow_existing_schema=allow)
        assert "f00dfeed1234" in message and "another application" in message


def test_a_database_at_the_newest_revision_opens_without_alembic(tmp_path: Path) -> None:
    """Each worker of a node opens a store its supervisor has just migrated: that must not
    cost it Alembic's import and a walk of the migration scripts."""
    url = f"sqlite:///{tmp_path / 'tether.db'}"
    _migrate(url)
    probe = (
        "import sys\n"
        "from tether.store import open_store\n"
        f"store = open_store({url!r})\n"
        "store.migrate()\n"
        "print('alembic' in sys.modules)\n"
    )
    assert _run(probe) == "False"
    # And a database behind it is still migrated (Alembic is loaded then).
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    behind = probe.replace(repr(url), repr(fresh))
    assert _run(behind) == "True"


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()
