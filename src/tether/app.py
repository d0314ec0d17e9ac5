"""The composition root: wires ports to adapters and offers the system operations."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tether._internal.timeutil import utcnow
from tether.attest import Attestor, StoreJtiStore
from tether.audit import AuditLog, Verification, verify_chain
from tether.auth import Authenticator, Principal
from tether.barrier import Barrier, BarrierStatus, UnsealFailures, encode_share
from tether.barrier._service import write_private_file
from tether.config import Settings
from tether.estate import EstateService, EstateViewHolder
from tether.issuance import TASK_PROVIDER, IssuanceParts, IssuanceService
from tether.lease import LeaseService, LifecycleWorker
from tether.model import AuditEvent, LeaseState
from tether.policy import PolicyHolder
from tether.providers import (
    JwtProvider,
    OpaqueTokenProvider,
    Provider,
    ProviderError,
    SigningKeys,
)
from tether.static import StaticBackend, StaticCredential, StaticSecrets
from tether.store import Store, open_store
from tether.targets import TargetRegistry

log = logging.getLogger("tether")


@dataclass(frozen=True, slots=True)
class InitResult:
    shares: list[str]
    root_token: str


class Tether:
    """One Tether node: its store, barrier, audit log and services."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(
            settings.database_url, allow_existing_schema=settings.allow_existing_schema
        )
        self.store.migrate()
        self.barrier = Barrier(self.store)
        self.audit = AuditLog(self.barrier.audit_key)
        self.auth = Authenticator(self.store, self.barrier.token_key)
        self.estate = EstateService(self.store, self.audit)
        self.view = EstateViewHolder(self.store)
        self.policy = PolicyHolder()
        self.policy.update(self.view.current)
        self.attestor = Attestor(
            lambda: tuple(self.view.current.issuers.values()), StoreJtiStore(self.store)
        )
        self.view.listeners += [self.policy.update, lambda _view: self.attestor.invalidate()]
        self.signing_keys = SigningKeys(self.store, self.barrier)
        self.jwt_provider = JwtProvider(self.signing_keys, lambda: settings.issuer_url)
        task_tokens = OpaqueTokenProvider(self.barrier.token_key, name=TASK_PROVIDER)
        providers: dict[str, Provider] = {
            "jwt": self.jwt_provider,
            "token": OpaqueTokenProvider(self.barrier.token_key),
            TASK_PROVIDER: task_tokens,
        }
        self.targets = TargetRegistry(self.store, self.barrier, self.audit)
        self.leases = LeaseService(
            self.store,
            self.audit,
            lambda lease: (
                self.targets.provider(lease.target) if lease.target else providers[lease.provider]
            ),
        )
        self.issuance = IssuanceService(
            IssuanceParts(
                store=self.store,
                audit=self.audit,
                view=self.view,
                attestor=self.attestor,
                policy=self.policy,
                providers=providers,
                jwt_provider=self.jwt_provider,
                task_tokens=task_tokens,
                leases=self.leases,
                token_key=self.barrier.token_key,
                issuer_url=lambda: settings.issuer_url,
                target_provider=self.targets.provider,
            )
        )
        self.statics = StaticSecrets(
            self.store, self.barrier, self.audit, self._static_backend, utcnow
        )
        self._static_due = 0.0
        self.worker = LifecycleWorker(self.sweep, interval=settings.sweep_interval)
        # External revocations (sessions to terminate) start at once, not at the next sweep.
        self.leases.on_ended.append(
            lambda ended: (
                self.worker.wake()
                if any(lease.state is LeaseState.REVOKING for lease in ended)
                else None
            )
        )
        self.estate.on_applied.append(self._estate_applied)
        self._housekeeping_due = 0.0
        self._rewrap_wakeup = threading.Event()
        self._stopping = threading.Event()
        self._rewrapper: threading.Thread | None = None

    # -- lifecycle --
    def start(self) -> None:
        """Start background work; in dev mode, initialize and unseal from the key file."""
        if self.settings.dev:
            self._dev_bootstrap()
        if not self.barrier.sealed:
            self.signing_keys.ensure_current()
        self._rewrapper = threading.Thread(target=self._rewrap_loop, name="rewrap", daemon=True)
        self._rewrapper.start()
        self._rewrap_wakeup.set()  # finish any rewrap a previous process left behind
        self.worker.start()

    def _estate_applied(self, _plan: object) -> None:
        self.view.reload()
        self.worker.wake()  # retirements, approvals and vendors may end leases now

    def sweep(self) -> None:
        """One pass of lifecycle work. Each step is an indexed query over a bounded batch."""
        self.view.refresh_if_changed()
        while self.leases.expire_due():
            pass
        self.leases.end_due_tasks()
        self.leases.revoke_unjustified()
        self.leases.retry_revocations()
        self.leases.settle_stale_pending(dt.timedelta(seconds=self.settings.pending_grace))
        if not self.barrier.sealed and time.monotonic() >= self._static_due:
            # Once a second: overlaps that ended, old versions still in use, rotations due.
            self._static_due = time.monotonic() + 1.0
            self.statics.sweep()
        if time.monotonic() >= self._housekeeping_due:
            self._housekeeping_due = time.monotonic() + self.settings.reconcile_interval
            with self.store.transaction() as tx:
                tx.forget_jti_before(utcnow())
            if not self.barrier.sealed:
                self.signing_keys.ensure_current()
                self.reconcile_targets()

    def _static_backend(self, credential: StaticCredential) -> StaticBackend:
        return self.targets.static_backend(credential)

    def reconcile_targets(self) -> dict[str, list[str]]:
        """Drop objects in target systems that carry Tether's prefix but no live lease."""

        def live(ids: Sequence[str]) -> set[str]:
            with self.store.read() as tx:
                return tx.live_lease_ids(ids)

        dropped: dict[str, list[str]] = {}
        for name in self.targets.kinds():
            try:
                dropped[name] = self.targets.provider(name).reconcile(live)
            except ProviderError as exc:
                log.warning(
                    "reconcile failed; will retry", extra={"target": name, "error": exc.code}
                )
                continue
            if dropped[name]:
                self._audit_system(
                    "target.reconcile",
                    "system:reconciler",
                    {"target": name, "dropped": dropped[name]},
                )
        return dropped

    def stop(self) -> None:
        try:
            self._flush_unseal_failures()
        except Exception:  # stopping goes on; the log says what was not recorded
            log.exception("could not record the last failed unseal attempts")
        self.worker.stop()
        self._stopping.set()
        self._rewrap_wakeup.set()
        if self._rewrapper is not None:
            self._rewrapper.join(timeout=5)
        self.store.close()

    def _dev_bootstrap(self) -> None:
        key_file = self.settings.dev_key_file
        if not self.barrier.status().initialized:
            with self._sealed_on_failure(), self.store.transaction() as tx:
                self.barrier.initialize_dev(tx, key_file)
                token, _ = self.auth.issue(tx, "dev-root", ["admin"], created_by="dev-mode")
                self.audit.append(
                    tx,
                    [
                        AuditEvent(
                            action="sys.init",
                            actor="dev-mode",
                            details={"shares": 1, "threshold": 1, "dev": True},
                        )
                    ],
                )
            write_private_file(self.settings.dev_token_file, token.encode())
            log.info(
                "dev mode: initialized; root token written",
                extra={"path": str(self.settings.dev_token_file)},
            )
        elif self.barrier.sealed:
            self.barrier.unseal_from_file(key_file)
            self._audit_system("sys.unseal", "dev-mode", {"method": "dev key file"})
        self.signing_keys.ensure_current()

    @contextmanager
    def _sealed_on_failure(self) -> Iterator[None]:
        # Initialization opens the barrier inside its transaction (the root token needs
        # the token key); if the transaction fails, no keyring was stored: close it again.
        # An already-open barrier is left alone: a refused second `init` must not seal it.
        was_sealed = self.barrier.sealed
        try:
            yield
        except BaseException:
            if was_sealed:
                self.barrier.seal()
            raise

    # -- system operations --
    def _audit_system(
        self,
        action: str,
        actor: str,
        details: dict[str, object],
        result: str = "ok",
        reason: str | None = None,
    ) -> None:
        with self.store.transaction() as tx:
            self.audit.append(
                tx,
                [
                    AuditEvent(
                        action=action, actor=actor, result=result, reason=reason, details=details
                    )
                ],
            )

    def initialize(self, shares: int, threshold: int, seal_after: bool = False) -> InitResult:
        """Create the root key, keyring and root token. Over the API Tether then seals,
        so the first unseal is done by the share holders, as every later one is."""
        with self._sealed_on_failure(), self.store.transaction() as tx:
            parts = self.barrier.initialize(tx, shares, threshold)
            token, record = self.auth.issue(tx, "root", ["admin"], created_by="init")
            self.audit.append(
                tx,
                [
                    AuditEvent(
                        action="sys.init",
                        actor="init",
                        details={
                            "shares": shares,
                            "threshold": threshold,
                            "root_token_id": record.id,
                        },
                    )
                ],
            )
        if seal_after:
            self.barrier.seal()
        return InitResult(shares=[encode_share(p) for p in parts], root_token=token)

    def unseal(self, share: str, source: str) -> BarrierStatus:
        """Give one share from `source`. Failed attempts are rate-limited per source and
        audited as per-window summaries (`sys.unseal.failed`), not one entry each."""
        was_sealed = self.barrier.sealed
        status = self.barrier.submit_share(share, source, record=self._audit_unseal_failures)
        if was_sealed and not status.sealed:
            self._flush_unseal_failures()
            self._audit_system("sys.unseal", f"remote:{source}", {"term": status.term})
            self.signing_keys.ensure_current()
            self._rewrap_wakeup.set()
        return status

    def _flush_unseal_failures(self) -> None:
        """Audit the failed unseal attempts not yet recorded (on unseal; also due on seal
        and stop, so the counts in the log add up to the attempts)."""
        self.barrier.unseal_guard.flush(self._audit_unseal_failures)

    def _audit_unseal_failures(self, batch: Sequence[UnsealFailures]) -> None:
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
                        "window_seconds": self.barrier.unseal_guard.window,
                        "limit": self.barrier.unseal_guard.limit,
                        "limited": failures.limited,
                    },
                )
            )
        with self.store.transaction() as tx:
            self.audit.append(tx, events)

    def seal(self, principal: Principal) -> BarrierStatus:
        principal.require_admin()
        self._flush_unseal_failures()
        # The entry is written while the keys are still there; if it fails, nothing seals.
        self._audit_system("sys.seal", principal.actor, {})
        self.barrier.seal()
        self.signing_keys.forget()
        return self.barrier.status()

    def rotate(self, principal: Principal) -> int:
        principal.require_admin()
        with self.store.transaction() as tx:
            term = self.barrier.rotate(tx)
            self.audit.append(
                tx, [AuditEvent(action="sys.rotate", actor=principal.actor, details={"term": term})]
            )
        self._rewrap_wakeup.set()
        return term

    def verify_audit(self) -> Verification:
        with self.store.read() as tx:
            head = tx.audit_head()
        return verify_chain(self.store.iter_audit(), expected_head=head)

    def _rewrap_loop(self) -> None:
        while not self._stopping.is_set():
            self._rewrap_wakeup.wait(timeout=60)
            self._rewrap_wakeup.clear()
            try:
                while not self._stopping.is_set() and not self.barrier.sealed:
                    if self.barrier.rewrap() == 0:
                        break
            except Exception:  # keep the worker alive; the next wake-up retries
                log.exception("rewrap failed; will retry")
