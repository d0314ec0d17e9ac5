"""Registered target systems: connections stored only through the barrier."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Mapping

from tether._internal.ids import SAFE_ID_RULE, is_safe_id
from tether.audit import AuditLog
from tether.barrier import Barrier
from tether.cluster import TARGET_CHANGED
from tether.errors import NotFoundError, TetherError
from tether.model import AuditEvent
from tether.providers import ExternalProvider, ProviderError
from tether.static import StaticBackend, StaticCredential, VaultOnly
from tether.store import Store
from tether.targets._kind import TargetKind
from tether.targets._kinds import TARGET_KINDS
from tether.targets._sessions import EvidenceUnsupported, SessionSource, TargetSession
from tether.targets._target import Target
from tether.targets.errors import InvalidTarget

log = logging.getLogger("tether.targets")


def _sealed_id(name: str) -> str:
    return f"target/{name}"


class TargetRegistry:
    """Targets by name. Metadata (name, kind) is plain; the DSN is sealed by the barrier.

    The kinds are those registered when the registry is made (`TARGET_KINDS`), unless
    given."""

    def __init__(
        self,
        store: Store,
        barrier: Barrier,
        audit: AuditLog,
        kinds: Mapping[str, TargetKind] | None = None,
    ) -> None:
        self._store = store
        self._barrier = barrier
        self._audit = audit
        self._kinds = dict(TARGET_KINDS if kinds is None else kinds)
        self._lock = threading.Lock()
        self._providers: dict[str, ExternalProvider] = {}

    def add(self, name: str, kind: str, dsn: str, actor: str) -> None:
        if not is_safe_id(name):
            raise InvalidTarget(f"name: is not a valid id: use {SAFE_ID_RULE}")
        if kind not in self._kinds:
            raise InvalidTarget(f"kind: must be one of {', '.join(sorted(self._kinds))}")
        schemes = self._kinds[kind].dsn_schemes
        if not self._kinds[kind].accepts_dsn(dsn) or len(dsn) > 4096:
            raise InvalidTarget(f"dsn: expected a {' or '.join(schemes)} URL")
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
            tx.publish(TARGET_CHANGED, {"name": name})  # every node drops its connection
            tx.on_commit(lambda: self.forget(name))

    def forget(self, name: str) -> None:
        """Drop the provider built for `name` (its stored connection changed)."""
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
        kind = self._kinds.get(target.kind)
        if kind is None:  # registered by a node that knew a kind this one does not
            raise InvalidTarget(f"kind: target {name!r} is of kind {target.kind!r}, not known here")
        provider = kind.provider(target)
        with self._lock:
            self._providers[name] = provider
        return provider

    def static_backend(self, credential: StaticCredential) -> StaticBackend:
        """Where a static credential's versions live: nowhere but Tether (`static`), or the
        target whose kind serves the credential's kind (e.g. two PostgreSQL roles)."""
        if credential.kind == VaultOnly.kind:
            return VaultOnly()
        kind = next((k for k in self._kinds.values() if k.static_kind == credential.kind), None)
        if kind is None or kind.static_backend is None:
            raise InvalidTarget(f"kind: no target kind serves {credential.kind!r} credentials")
        if credential.target is None:
            raise InvalidTarget(f"target: a {credential.kind} credential needs a target")
        return kind.static_backend(self.get(credential.target), credential)

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
            tx.publish(TARGET_CHANGED, {"name": name})  # every node drops its connection
            tx.on_commit(lambda: self.forget(name))

    # -- usage evidence --------------------------------------------------------------------

    def sample_sessions(
        self, static_users: Mapping[str, Collection[str]]
    ) -> tuple[list[TargetSession], dict[str, str]]:
        """Live sessions at every registered target of Tether's per-lease objects and of
        the static users given per target name; and, per target that could not be
        sampled, the error class name (never its message), so that one target down
        does not stop the sample of the others."""
        for users in static_users.values():
            _names(users)
        sessions: list[TargetSession] = []
        failures: dict[str, str] = {}
        for name in sorted(self.kinds()):
            try:
                sessions += self._session_source(name).sample_sessions(static_users.get(name, ()))
            except TetherError as exc:  # unreachable, refused, sealed, gone, unsupported
                failures[name] = _error_name(exc)
            except Exception as exc:  # a bug in one kind must not stop the others
                # Only the class: an unexpected exception's text may quote the target.
                log.error(
                    "session sample failed unexpectedly",
                    extra={"target": name, "error": type(exc).__name__},
                )
                failures[name] = type(exc).__name__
        return sessions, failures

    def usable_users(self, target: str, users: Collection[str]) -> set[str]:
        """Which of `users` still exist at `target` and can log in (for finding retired
        credentials that still work). Raises the kind's ProviderError on failure,
        EvidenceUnsupported (a ProviderError) when the kind cannot tell, NotFoundError
        when no such target is registered."""
        return self._session_source(target).usable_users(_names(users))

    def _session_source(self, name: str) -> SessionSource:
        provider = self.provider(name)
        if not isinstance(provider, SessionSource):
            raise EvidenceUnsupported(f"target {name!r}: its kind reports no sessions or users")
        return provider


def _error_name(exc: TetherError) -> str:
    """The class of what failed: a provider's underlying error class when it carries one
    (e.g. OperationalError, ConnectionError), else the exception's own class."""
    error = getattr(exc, "error", None) if isinstance(exc, ProviderError) else None
    return error if isinstance(error, str) and error else type(exc).__name__


def _names(users: Collection[str]) -> Collection[str]:
    # A str is a Collection[str] too: one name passed bare would be read letter by letter.
    if isinstance(users, str):
        raise TypeError("expected a collection of user names, not one name")
    return users
