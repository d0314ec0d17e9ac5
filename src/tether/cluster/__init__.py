"""Many processes and nodes on one database behaving as one Tether (design.md §5).

- The change feed (`Feed`): changes that nodes cache (estate view, policy, API tokens,
  signing keys, the keyring, target connections, ended leases) are published as events
  in the transaction that makes them, and every process applies every event in commit
  order, woken by PostgreSQL's NOTIFY and polling at least every 250 ms (SQLite: polling
  only).
- Leadership (`Leadership`): exactly one process runs the background work, under a
  leadership lease with a fencing term that each background write transaction checks
  (`FencedStore`), so a deposed leader's write fails instead of doing work twice.
"""

from tether.cluster._events import (
    API_TOKEN_CREATED,
    API_TOKEN_REVOKED,
    ESTATE_APPLIED,
    GOVERN_CHANGED,
    KEYRING_ROTATED,
    LEASES_ENDED,
    SIGNING_KEYS_CHANGED,
    TARGET_CHANGED,
    publish_ended,
    publish_govern_changed,
)
from tether.cluster._feed import Feed
from tether.cluster._leader import Fence, FencedStore, Leadership
from tether.cluster._wiring import NodeCaches, subscribe
from tether.cluster.errors import ClusterError, Deposed

__all__ = [
    "API_TOKEN_CREATED",
    "API_TOKEN_REVOKED",
    "ESTATE_APPLIED",
    "GOVERN_CHANGED",
    "KEYRING_ROTATED",
    "LEASES_ENDED",
    "SIGNING_KEYS_CHANGED",
    "TARGET_CHANGED",
    "ClusterError",
    "Deposed",
    "Feed",
    "Fence",
    "FencedStore",
    "Leadership",
    "NodeCaches",
    "publish_ended",
    "publish_govern_changed",
    "subscribe",
]
