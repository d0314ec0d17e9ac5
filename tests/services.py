"""Real servers for tests: found on this machine, or a clear skip (a failure under CI=true)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get("TETHER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def unavailable(reason: str) -> None:
    """Skip locally; under CI a missing service is a failure, not a silent pass."""
    if IN_CI:
        pytest.fail(f"service test cannot run in CI: {reason}")
    pytest.skip(reason)


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards. Yields its URL."""
    try:
        import psycopg

        admin = psycopg.connect(
            PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1),
            autocommit=True,
            connect_timeout=3,
        )
    except Exception as exc:  # any failure to connect means: no server for this test
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
        raise AssertionError("unreachable") from exc
    name = "tether_test_" + secrets.token_hex(6)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN_URL.rsplit("/", 1)[0]
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
