"""The storage port and its adapters.

`Store` is the port: services open a transaction, read and write through `Tx`, and
either everything in it lands or nothing does. `MemoryStore` serves tests; the SQL
adapter serves SQLite (embedded) and PostgreSQL (scale-out). `open_store(url)` is the
one way the composition root gets one.
"""

from tether.store._port import (
    GOVERN_TYPES,
    USAGE_DISTINCT_CAP,
    ApiTokenRecord,
    AuditFilter,
    ClusterEvent,
    GovernFilter,
    GovernRecord,
    IdentityFilter,
    JoinTokenRecord,
    KeyUsageCount,
    LeaseFilter,
    SealedRecord,
    Store,
    SuspectLeases,
    TaskFilter,
    Tx,
    UsageKey,
    UsageRollup,
    WakeUps,
    merge_facets,
    merge_rollups,
)
from tether.store.errors import ForeignSchema, StoreError, StoreUnavailable, StoreUnreachable

__all__ = [
    "GOVERN_TYPES",
    "USAGE_DISTINCT_CAP",
    "ApiTokenRecord",
    "AuditFilter",
    "ClusterEvent",
    "ForeignSchema",
    "GovernFilter",
    "GovernRecord",
    "IdentityFilter",
    "JoinTokenRecord",
    "KeyUsageCount",
    "LeaseFilter",
    "SealedRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoreUnreachable",
    "SuspectLeases",
    "TaskFilter",
    "Tx",
    "UsageKey",
    "UsageRollup",
    "WakeUps",
    "merge_facets",
    "merge_rollups",
    "open_store",
    "shown_url",
]


def shown_url(url: str) -> str:
    """The database URL as it may be printed: never a password, never a query."""
    if url.startswith("memory://"):
        return url
    from tether.store._sql._engine import shown_url as shown

    return shown(url)


def open_store(url: str, *, allow_existing_schema: bool = False) -> Store:
    """Open the store at `url`: `memory://`, `sqlite:///path` or `postgresql://...`.

    Its `migrate()` refuses a database that holds another application's tables unless
    `allow_existing_schema` (Tether's tables then go beside them).
    """
    if url.startswith("memory:"):
        from tether.store._memory import MemoryStore

        return MemoryStore()
    from tether.store._sql import SqlStore

    return SqlStore(url, allow_existing_schema=allow_existing_schema)
