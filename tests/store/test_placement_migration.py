"""Migration 0004 gives every live lease written before it the placement of its identity,
so the sweep compares them from then on (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tests.services import throwaway_postgres_database
from tether.model import Placement
from tether.store import open_store
from tether.store._sql._engine import _MIGRATIONS, _engine_url

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SPEC = {
    "id": "svc",
    "kind": "workload",
    "owner": "team-a",
    "purpose": "p",
    "justification": "j",
    "environment": "prod",
    "region": "eu-west-1",
    "status": "active",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        with throwaway_postgres_database() as pg:
            yield pg


def _upgrade(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


def _lease(lease_id: str, state: str) -> dict[str, object]:
    return {
        "id": lease_id,
        "identity_id": "svc",
        "owner_id": "team-a",
        "provider": "token",
        "issued_at": NOW,
        "expires_at": NOW + dt.timedelta(hours=1),
        "state": state,
        "scopes": "",
        "revoke_attempts": 0,
    }


def test_live_leases_written_before_get_their_identitys_placement(url: str) -> None:
    engine = sa.create_engine(_engine_url(url))
    _upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO identities (id, kind, owner_id, environment, status, spec,"
                " created_at, updated_at) VALUES ('svc', 'workload', 'team-a', 'prod',"
                " 'active', :spec, :now, :now)"
            ),
            {"spec": json.dumps(SPEC), "now": NOW},
        )
        leases = sa.table("leases", *(sa.column(k) for k in _lease("x", "active")))
        conn.execute(leases.insert(), [_lease("live", "active"), _lease("ended", "revoked")])
    engine.dispose()

    store = open_store(url)
    store.migrate()
    try:
        with store.read() as tx:
            live, ended = tx.get_lease("live"), tx.get_lease("ended")
        assert live is not None and live.placement == Placement("team-a", "prod", "eu-west-1")
        assert ended is not None and ended.placement is None
        with store.transaction() as tx:
            # No owner object yet: a candidate for the sweep (the rule will say why).
            assert [s["id"] for s in tx.unjustified_identities(NOW, [], 10)] == ["svc"]
            tx.put_estate_object("owner", "team-a", {"id": "team-a", "contact": "a@x.test"})
        with store.read() as tx:
            assert tx.unjustified_identities(NOW, [], 10) == []
        with store.transaction() as tx:
            tx.put_identity({**SPEC, "region": "us-east-1"})
        with store.read() as tx:
            assert [s["id"] for s in tx.unjustified_identities(NOW, [], 10)] == ["svc"]
    finally:
        store.close()
