"""What a store has written, as an attacker holding its database sees it: every value of
every table, and the SQLite file and its WAL. The secret-at-rest tests search it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa


def persisted_sql_bytes(engine: Any) -> bytes:
    chunks = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value))
                    else:
                        chunks.append(str(value).encode())
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "")
        for candidate in (path, Path(f"{path}-wal")):
            if candidate.exists():
                chunks.append(candidate.read_bytes())
    return b"\x00".join(chunks)
