"""What each kind of event does to a node's caches: the feed's subscriptions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether.cluster import _events as kinds
from tether.cluster._feed import Feed


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


class EstateView(Protocol):
    @property
    def current(self) -> _Versioned: ...
    def reload(self) -> object: ...


class SigningKeyCache(Protocol):
    def forget(self) -> None: ...
    def ensure_current(self) -> None: ...


class KeyringHolder(Protocol):
    @property
    def sealed(self) -> bool: ...
    def reload(self) -> None: ...


class EndedLeaseSet(Protocol):
    def add(self, lease_ids: Iterable[str]) -> None: ...
    def heartbeat(self, as_of: float) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeCaches:
    """A node's caches that other nodes' changes invalidate, and its wake-ups."""

    view: EstateView
    forget_api_tokens: Callable[[], None]
    signing_keys: SigningKeyCache
    barrier: KeyringHolder
    ended_leases: EndedLeaseSet
    #: Drop the provider built for a target (by name).
    forget_target: Callable[[str], None]
    #: Sweep now (on the leader; elsewhere a no-op): leases ended, estate changed.
    wake: Callable[[], None]
    #: Rewrap now (on the leader): the keyring rotated.
    rewrap_soon: Callable[[], None]
    #: Governance facts changed (on any process): `{"identities": [...]}` or
    #: `{"all": true}`, what the leader's governance evaluates again.
    governance_changed: Callable[[Mapping[str, Any]], None] = field(default=lambda _data: None)


def subscribe(feed: Feed, caches: NodeCaches) -> None:
    """Subscribe `caches` to the feed: each kind of event to what it invalidates."""

    def estate_applied(data: Mapping[str, Any]) -> None:
        # The node that applied reloaded on commit; a reload is not repeated for it.
        if caches.view.current.version < int(data.get("version", 0)):
            caches.view.reload()
        caches.wake()
        caches.governance_changed({"all": True})  # owners, grants, thresholds may differ

    def signing_keys_changed(_data: Mapping[str, Any]) -> None:
        if caches.barrier.sealed:
            caches.signing_keys.forget()
        else:
            caches.signing_keys.ensure_current()  # re-reads the stored keys

    def keyring_rotated(_data: Mapping[str, Any]) -> None:
        caches.barrier.reload()
        caches.rewrap_soon()

    def leases_ended(data: Mapping[str, Any]) -> None:
        caches.ended_leases.add(data["lease_ids"])
        if data.get("revoking"):
            caches.wake()  # an external revocation (sessions to end) is due now

    def resync() -> None:
        caches.view.reload()
        caches.forget_api_tokens()
        signing_keys_changed({})
        caches.barrier.reload()

    feed.subscribe(kinds.ESTATE_APPLIED, estate_applied)
    feed.subscribe(kinds.API_TOKEN_REVOKED, lambda _data: caches.forget_api_tokens())
    feed.subscribe(kinds.SIGNING_KEYS_CHANGED, signing_keys_changed)
    feed.subscribe(kinds.KEYRING_ROTATED, keyring_rotated)
    feed.subscribe(kinds.LEASES_ENDED, leases_ended)
    feed.subscribe(kinds.GOVERN_CHANGED, caches.governance_changed)
    feed.subscribe(kinds.TARGET_CHANGED, lambda data: caches.forget_target(str(data["name"])))
    feed.on_heartbeat.append(caches.ended_leases.heartbeat)
    feed.on_resync.append(resync)
