"""Reconciliation: objects in target systems that carry Tether's name prefix but no live
lease (left by a crash between the provider call and the lease update) are dropped."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from tether.audit import AuditLog
from tether.model import AuditEvent
from tether.providers import ProviderError
from tether.store import Store

log = logging.getLogger("tether.lifecycle")


class Reconcilable(Protocol):
    def reconcile(self, live_lease_ids: Callable[[Sequence[str]], set[str]]) -> list[str]: ...


class Targets(Protocol):
    """The registered targets, by name."""

    def kinds(self) -> Iterable[str]: ...
    def provider(self, name: str) -> Reconcilable: ...


def reconcile_targets(targets: Targets, store: Store, audit: AuditLog) -> dict[str, list[str]]:
    """Drop, in every registered target, prefixed objects with no live lease; audited per
    target. A target that cannot be reached is logged and tried again next time."""

    def live(ids: Sequence[str]) -> set[str]:
        with store.read() as tx:
            return tx.live_lease_ids(ids)

    dropped: dict[str, list[str]] = {}
    for name in targets.kinds():
        try:
            dropped[name] = targets.provider(name).reconcile(live)
        except ProviderError as exc:
            log.warning("reconcile failed; will retry", extra={"target": name, "error": exc.code})
            continue
        if dropped[name]:
            with store.transaction() as tx:
                audit.append(
                    tx,
                    [
                        AuditEvent(
                            action="target.reconcile",
                            actor="system:reconciler",
                            details={"target": name, "dropped": dropped[name]},
                        )
                    ],
                )
    return dropped
