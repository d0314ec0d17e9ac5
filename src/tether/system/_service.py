"""System operations: initialize, unseal, seal and rotate the barrier, each audited, and
verify the audit log. Dev mode initializes and unseals itself from a key file; a
production node may unseal itself from a key file of shares (`TETHER_UNSEAL_KEY_FILE`).

In a worker of `tether serve --workers N`, unsealing and sealing go through a `Custodian`
(the supervisor), which keeps the root key and opens or seals every worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tether._internal.files import write_private_file
from tether.audit import AuditLog, Verification, verify_chain
from tether.auth import Authenticator, Principal
from tether.barrier import Barrier, BarrierStatus, UnsealFailures, encode_share
from tether.cluster import KEYRING_ROTATED
from tether.model import AuditEvent
from tether.store import Store, Tx
from tether.system._custodian import Custodian

log = logging.getLogger("tether")


@dataclass(frozen=True, slots=True)
class InitResult:
    shares: list[str]
    root_token: str


@dataclass(frozen=True, slots=True)
class DevFiles:
    """Dev mode's files: the one unseal share and the root token, owner-readable only."""

    key_file: Path
    token_file: Path


@dataclass(frozen=True, slots=True)
class _Init:
    """How an initialization names its root token and records itself."""

    #: The root token's name (not the token).
    root_name: str
    actor: str
    shares: int
    threshold: int
    dev: bool = False


class SystemService:
    """The barrier's life (init, unseal, seal, rotate), audited, and audit verification.

    Listeners let the composition root attach what follows each change without this
    service knowing about signing keys or re-encryption.
    """

    def __init__(
        self, store: Store, barrier: Barrier, audit: AuditLog, auth: Authenticator
    ) -> None:
        self._store = store
        self._barrier = barrier
        self._audit = audit
        self._auth = auth
        #: Called when the barrier is open for work: after an unseal, and at start.
        self.on_opened: list[Callable[[], None]] = []
        #: Called after the barrier sealed.
        self.on_sealed: list[Callable[[], None]] = []
        #: Called after a keyring rotation committed (records need rewrapping).
        self.on_rotated: list[Callable[[], None]] = []
        self._custodian: Custodian | None = None

    def attach(self, custodian: Custodian) -> None:
        """Make this node a worker: from now on unsealing, sealing and handing over the
        root key after init go through `custodian`, which does them for every worker."""
        self._custodian = custodian

    # -- start and stop --
    def start(self, dev: DevFiles | None = None, unseal_key_file: Path | None = None) -> None:
        """In dev mode, initialize or unseal from the key file; else unseal from
        `unseal_key_file` if given. Then, if the barrier is open, tell the listeners
        (signing keys, a rewrap a previous process left).

        A worker does neither: its supervisor bootstrapped the node and hands it the key.
        """
        if self._custodian is None:
            if dev is not None:
                self._dev_bootstrap(dev)
            elif unseal_key_file is not None and self._barrier.sealed:
                self._unseal_from_key_file(unseal_key_file)
        if not self._barrier.sealed:
            self._notify(self.on_opened)

    def _unseal_from_key_file(self, key_file: Path) -> None:
        if not self._barrier.status().initialized:
            # `tether init` is still to be run against this node; it can then be restarted.
            log.warning(
                "not initialized: the unseal key file is not used until after `tether init`",
                extra={"path": str(key_file)},
            )
            return
        self._barrier.unseal_from_file(key_file)
        self._record("sys.unseal", "key-file", {"method": "key file", "path": str(key_file)})

    def stop(self) -> None:
        try:
            self._flush_unseal_failures()
        except Exception:  # stopping goes on; the log says what was not recorded
            log.exception("could not record the last failed unseal attempts")

    def _dev_bootstrap(self, dev: DevFiles) -> None:
        if not self._barrier.status().initialized:

            def open_dev(tx: Tx) -> list[bytes]:
                self._barrier.initialize_dev(tx, dev.key_file)
                return []  # the one share is in the key file, not handed out

            _, token = self._initialize(
                open_dev,
                _Init(root_name="dev-root", actor="dev-mode", shares=1, threshold=1, dev=True),
            )
            write_private_file(dev.token_file, token.encode())
            log.info(
                "dev mode: initialized; root token written", extra={"path": str(dev.token_file)}
            )
        elif self._barrier.sealed:
            self._barrier.unseal_from_file(dev.key_file)
            self._record("sys.unseal", "dev-mode", {"method": "dev key file"})

    def _initialize(
        self, open_barrier: Callable[[Tx], list[bytes]], init: _Init
    ) -> tuple[list[bytes], str]:
        """Create the keyring (`open_barrier`) and the root token in one audited
        transaction; returns the shares and the root token."""
        with self._sealed_on_failure(), self._store.transaction() as tx:
            parts = open_barrier(tx)
            token, record = self._auth.issue(tx, init.root_name, ["admin"], created_by=init.actor)
            details: dict[str, object] = {
                "shares": init.shares,
                "threshold": init.threshold,
                "root_token_id": record.id,
            }
            if init.dev:
                details["dev"] = True
            self._audit.append(
                tx, [AuditEvent(action="sys.init", actor=init.actor, details=details)]
            )
        return parts, token

    @contextmanager
    def _sealed_on_failure(self) -> Iterator[None]:
        # Initialization opens the barrier inside its transaction (the root token needs
        # the token key); if the transaction fails, no keyring was stored: close it again.
        # An already-open barrier is left alone: a refused second `init` must not seal it.
        was_sealed = self._barrier.sealed
        try:
            yield
        except BaseException:
            if was_sealed:
                self._barrier.seal()
            raise

    # -- operations --
    def initialize(self, shares: int, threshold: int, seal_after: bool = False) -> InitResult:
        """Create the root key, keyring and root token. Over the API Tether then seals,
        so the first unseal is done by the share holders, as every later one is."""
        parts, token = self._initialize(
            lambda tx: self._barrier.initialize(tx, shares, threshold),
            _Init(root_name="root", actor="init", shares=shares, threshold=threshold),
        )
        if seal_after:
            self._barrier.seal()
        elif self._custodian is not None:
            self._custodian.adopt(self._barrier.root_key())
        return InitResult(shares=[encode_share(p) for p in parts], root_token=token)

    def unseal(self, share: str, source: str) -> BarrierStatus:
        """Give one share from `source`. Failed attempts are rate-limited per source and
        audited as per-window summaries (`sys.unseal.failed`), not one entry each.

        A worker relays the share to its supervisor, which limits, audits and combines
        for the whole node; it has opened this worker too by the time it answers."""
        if self._custodian is not None:
            self._custodian.unseal(share, source)
            return self._barrier.status()
        was_sealed = self._barrier.sealed
        status = self._barrier.submit_share(share, source, record=self._audit_unseal_failures)
        if was_sealed and not status.sealed:
            self._flush_unseal_failures()
            self._record("sys.unseal", f"remote:{source}", {"term": status.term})
            self._notify(self.on_opened)
        return status

    def seal(self, principal: Principal) -> BarrierStatus:
        principal.require_admin()
        self._flush_unseal_failures()
        # The entry is written while the keys are still there; if it fails, nothing seals.
        self._record("sys.seal", principal.actor, {})
        if self._barrier.seal():
            self._notify(self.on_sealed)
        if self._custodian is not None:
            # This worker is sealed already, whatever happens to the rest of the node.
            self._custodian.seal()
        return self._barrier.status()

    # -- changes made (and audited) by another process of the node --
    def opened_elsewhere(self, root_key: bytes) -> None:
        """The node was unsealed (or initialized) by another of its processes: open
        with its root key and, if this barrier was sealed, tell the listeners."""
        was_sealed = self._barrier.sealed
        self._barrier.open(root_key)
        if was_sealed:
            self._notify(self.on_opened)

    def sealed_elsewhere(self) -> None:
        """Another process of the node recorded `sys.seal`: seal this one too."""
        self._flush_unseal_failures()
        if self._barrier.seal():
            self._notify(self.on_sealed)

    def rotate(self, principal: Principal) -> int:
        principal.require_admin()
        with self._store.transaction() as tx:
            term = self._barrier.rotate(tx)
            self._audit.append(
                tx, [AuditEvent(action="sys.rotate", actor=principal.actor, details={"term": term})]
            )
            # With the change itself: every other process re-reads the keyring.
            tx.publish(KEYRING_ROTATED, {"term": term})
        self._notify(self.on_rotated)
        return term

    def verify_audit(self) -> Verification:
        with self._store.read() as tx:
            head = tx.audit_head()
        return verify_chain(self._store.iter_audit(), expected_head=head)

    # -- helpers --
    @staticmethod
    def _notify(listeners: Sequence[Callable[[], None]]) -> None:
        for listener in listeners:
            listener()

    def _record(self, action: str, actor: str, details: dict[str, object]) -> None:
        with self._store.transaction() as tx:
            self._audit.append(tx, [AuditEvent(action=action, actor=actor, details=details)])

    def _flush_unseal_failures(self) -> None:
        """Audit the failed unseal attempts not yet recorded (on unseal; also due on seal
        and stop, so the counts in the log add up to the attempts)."""
        self._barrier.unseal_guard.flush(self._audit_unseal_failures)

    def _audit_unseal_failures(self, batch: Sequence[UnsealFailures]) -> None:
        guard = self._barrier.unseal_guard
        events = []
        for failures in batch:
            plural = "" if failures.count == 1 else "s"
            reason = f"{failures.count} failed unseal attempt{plural}"
            if failures.closed:
                reason += " (window closed)"
            elif failures.limited:
                reason += f"; this source is refused for {failures.retry_after} s"
            events.append(
                AuditEvent(
                    action="sys.unseal.failed",
                    actor=f"remote:{failures.source}",
                    result="error",
                    reason=reason,
                    details={
                        "count": failures.count,
                        "reasons": dict(failures.reasons),
                        "window": "closed" if failures.closed else "open",
                        "window_total": failures.window_total,
                        "window_seconds": guard.window,
                        "limit": guard.limit,
                        "limited": failures.limited,
                    },
                )
            )
        with self._store.transaction() as tx:
            self._audit.append(tx, events)
