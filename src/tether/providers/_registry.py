"""Registered target systems: connections stored only through the barrier."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping

from tether._internal.ids import SAFE_ID_RULE, is_safe_id
from tether.audit import AuditLog
from tether.barrier import Barrier
from tether.errors import NotFoundError, TetherError
from tether.model import AuditEvent
from tether.providers._base import ExternalProvider, Target
from tether.store import Store

_SCHEMES = {"postgres": ("postgresql://", "postgres://"), "redis": ("redis://", "rediss://")}


class InvalidTarget(TetherError):
    status_code = 422
    code = "invalid_target"


def _sealed_id(name: str) -> str:
    return f"target/{name}"


class TargetRegistry:
    """Targets by name. Metadata (name, kind) is plain; the DSN is sealed by the barrier."""

    def __init__(
        self,
        store: Store,
        barrier: Barrier,
        audit: AuditLog,
        factories: Mapping[str, Callable[[Target], ExternalProvider]],
    ) -> None:
        self._store = store
        self._barrier = barrier
        self._audit = audit
        self._factories = factories
        self._lock = threading.Lock()
        self._providers: dict[str, ExternalProvider] = {}

    def add(self, name: str, kind: str, dsn: str, actor: str) -> None:
        if not is_safe_id(name):
            raise InvalidTarget(f"name: is not a valid id: use {SAFE_ID_RULE}")
        if kind not in self._factories:
            raise InvalidTarget(f"kind: must be one of {', '.join(sorted(self._factories))}")
        if not dsn.startswith(_SCHEMES[kind]) or len(dsn) > 4096:
            raise InvalidTarget(f"dsn: expected a {' or '.join(_SCHEMES[kind])} URL")
        with self._store.transaction() as tx:
            replaced = name in tx.estate_objects("target")
            self._barrier.put_secret(
                tx, _sealed_id(name), "target", json.dumps({"kind": kind, "dsn": dsn}).encode()
            )
            tx.put_estate_object("target", name, {"name": name, "kind": kind})
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="target.replace" if replaced else "target.add",
                        actor=actor,
                        details={"target": name, "kind": kind},
                    )
                ],
            )
            tx.on_commit(lambda: self._forget(name))

    def _forget(self, name: str) -> None:
        with self._lock:
            self._providers.pop(name, None)

    def kinds(self) -> dict[str, str]:
        with self._store.read() as tx:
            return {name: spec["kind"] for name, spec in tx.estate_objects("target").items()}

    def get(self, name: str) -> Target:
        with self._store.read() as tx:
            plain = self._barrier.get_secret(tx, _sealed_id(name))
        if plain is None:
            raise NotFoundError(f"no target {name!r}: register it with `tether target add`")
        doc = json.loads(plain)
        return Target(name=name, kind=doc["kind"], dsn=doc["dsn"])

    def provider(self, name: str) -> ExternalProvider:
        with self._lock:
            cached = self._providers.get(name)
        if cached is not None:
            return cached
        target = self.get(name)
        provider = self._factories[target.kind](target)
        with self._lock:
            self._providers[name] = provider
        return provider

    def rotate_root(self, name: str, actor: str) -> None:
        """Replace the admin credential Tether uses; nobody learns the new one."""
        rotated = self.provider(name).rotate_root()
        with self._store.transaction() as tx:
            self._barrier.put_secret(
                tx,
                _sealed_id(name),
                "target",
                json.dumps({"kind": rotated.kind, "dsn": rotated.dsn}).encode(),
            )
            self._audit.append(
                tx, [AuditEvent(action="target.rotate_root", actor=actor, details={"target": name})]
            )
            tx.on_commit(lambda: self._forget(name))
