"""A fresh SQLite store migrated to head, compared with the tables Tether declares: what
each migration test asks of its own tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tether.store import open_store
from tether.store._sql import tables as t


@contextmanager
def migrated(tmp_path: Path, *names: str) -> Iterator[tuple[list[Any], sa.Inspector]]:
    """(the differences between the migrated schema and `tables.py` that mention any of
    `names`, an inspector of the migrated database)."""
    url = f"sqlite:///{tmp_path / 'tether.db'}"
    store = open_store(url)
    store.migrate()
    store.close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = [
                d for d in compare_metadata(context, t.metadata) if any(n in repr(d) for n in names)
            ]
            yield diffs, sa.inspect(conn)
    finally:
        engine.dispose()
