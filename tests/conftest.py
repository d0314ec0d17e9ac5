from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_cluster import pg_cluster  # noqa: F401 - one cluster per session, shared
from tests.services import throwaway_postgres_database
from tether.app import Tether
from tether.config import Settings
from tether.store import Store, open_store

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.service)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same contract, run against every storage backend."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
    else:
        with throwaway_postgres_database() as url:
            yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def node(store_url: str, tmp_path: Path) -> Iterator[Tether]:
    """An initialized, unsealed node (1 share) on every backend; `node.root_token` is admin."""
    n = Tether(Settings(home=tmp_path, database_url=store_url))
    result = n.initialize(shares=1, threshold=1)
    n.root_token = result.root_token  # type: ignore[attr-defined]
    n.shares = result.shares  # type: ignore[attr-defined]
    yield n
    n.stop()


@pytest.fixture
def sqlite_node(tmp_path: Path) -> Iterator[Tether]:
    n = Tether(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'tether.db'}"))
    result = n.initialize(shares=1, threshold=1)
    n.root_token = result.root_token  # type: ignore[attr-defined]
    yield n
    n.stop()
