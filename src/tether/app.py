"""The composition root: wires ports to adapters and services to each other. No logic
lives here: system operations are `tether.system`, background work `tether.lifecycle`.

`Tether(settings, store=None, clock=utcnow)`: every service that decides by the time
reads `clock`, so a test can move time instead of sleeping.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography import x509

from tether._internal.timeutil import Clock, utcnow
from tether.attest import Attestor, StoreJtiStore, X509Attestor
from tether.audit import AuditLog, Verification
from tether.auth import Authenticator, Principal, TokenService
from tether.authzen import Pdp, PdpParts
from tether.barrier import Barrier, BarrierStatus
from tether.cluster import LEASES_ENDED, Feed, FencedStore, Leadership, NodeCaches, subscribe
from tether.config import Settings
from tether.errors import TetherError
from tether.estate import EstateService, EstateViewHolder
from tether.govern import (
    AlertOutbox,
    DraftLike,
    Governance,
    GovernParts,
    PageDrafts,
    Sinks,
    sink_key_from,
)
from tether.issuance import TASK_PROVIDER, IssuanceParts, IssuanceService
from tether.keys import (
    KEYS_CHANGED,
    ApproverGroup,
    CryptoPolicy,
    EscrowHolder,
    KeyParts,
    KeyService,
    cedar_decider,
)
from tether.lease import EndedLeases, LeaseService
from tether.lifecycle import (
    Lifecycle,
    LifecycleWorker,
    Sweep,
    SweepParts,
    SweepSchedule,
    reconcile_targets,
)
from tether.model import Identity, Lease, Usage, Vendor
from tether.policy import PolicyEngine, PolicyHolder
from tether.providers import JwtProvider, OpaqueTokenProvider, Provider, SigningKeys
from tether.scan import ExposureParts, Exposures
from tether.scan._github import GithubKeys
from tether.spiffe import (
    SPIFFE_CA_CHANGED,
    CaUnavailable,
    JwtSvidProvider,
    RevokedSvids,
    SpiffeError,
    SpiffeId,
    TrustDomainCA,
    WorkloadIdentities,
    WorkloadParts,
    WorkloadSocket,
    X509SvidProvider,
    default_spiffe_id,
    parse_spiffe_id,
)
from tether.static import StaticBackend, StaticCredential, StaticSecrets
from tether.store import Store, open_store
from tether.system import DevFiles, InitResult, SystemService
from tether.targets import TargetRegistry

__all__ = ["InitResult", "Tether"]


class _KeySettingsOfView:
    """The estate's key settings, parsed once per estate version (every encryption asks
    for the crypto policy)."""

    def __init__(self, view: Callable[[], Any]) -> None:
        self._view = view
        self._parsed: tuple[int, CryptoPolicy, dict[str, Any], dict[str, Any]] | None = None

    def _current(self) -> tuple[int, CryptoPolicy, dict[str, Any], dict[str, Any]]:
        view = self._view()
        parsed = self._parsed
        if parsed is None or parsed[0] != view.version:
            raw = view.key_settings
            groups = [ApproverGroup.from_spec(g) for g in raw.get("approver_groups", [])]
            holders = [EscrowHolder.from_spec(h) for h in raw.get("escrow_holders", [])]
            parsed = (
                view.version,
                CryptoPolicy.from_spec(raw.get("crypto_policy")),
                {g.id: g for g in groups},
                {h.id: h for h in holders},
            )
            self._parsed = parsed
        return parsed

    def crypto_policy(self) -> CryptoPolicy:
        return self._current()[1]

    def approver_groups(self) -> Mapping[str, Any]:
        return self._current()[2]

    def escrow_holders(self) -> Mapping[str, Any]:
        return self._current()[3]


class Tether:
    """One Tether node: its store, barrier, audit log and services."""

    def __init__(self, settings: Settings, store: Store | None = None, clock: Clock = utcnow):  # noqa: PLR0915 - the composition root
        self.settings = settings
        self.clock = clock
        # Fenced: the background work's writes check, in their own transaction, that this
        # process still leads (tether.cluster); the request path's are never fenced.
        self.store: Store = FencedStore(
            store
            or open_store(
                settings.database_url, allow_existing_schema=settings.allow_existing_schema
            )
        )
        self.store.migrate()
        # Before anything cached is loaded: every change committed after it is applied.
        self.feed = Feed(self.store)
        self.ended_leases = EndedLeases(standalone=self.store.single_process)
        self.barrier = Barrier(self.store)
        self.audit = AuditLog(self.barrier.audit_key, clock)
        self.auth = Authenticator(self.store, self.barrier.token_key, clock)
        self.tokens = TokenService(self.store, self.auth, self.audit, clock)
        self.estate = EstateService(self.store, self.audit)
        self.view = EstateViewHolder(self.store)
        self.policy = PolicyHolder()
        self.policy.update(self.view.current)
        self.attestor = Attestor(
            lambda: tuple(self.view.current.issuers.values()),
            StoreJtiStore(self.store),
            clock=clock,
        )
        self.view.listeners += [self.policy.update, lambda _view: self.attestor.invalidate()]
        self.pdp = self._pdp(clock)
        self.signing_keys = SigningKeys(self.store, self.barrier, clock=clock)
        self.jwt_provider = JwtProvider(self.signing_keys, lambda: settings.issuer_url)
        task_tokens = OpaqueTokenProvider(self.barrier.token_key, name=TASK_PROVIDER)
        providers: dict[str, Provider] = {
            "jwt": self.jwt_provider,
            "token": OpaqueTokenProvider(self.barrier.token_key),
            TASK_PROVIDER: task_tokens,
        }
        self.spiffe_ca = TrustDomainCA(
            self.store, self.barrier, lambda: self.view.current.trust_domain, clock
        )
        self.revoked_svids, self.x509_attestor = self._x509_attestation(clock)
        providers["x509-svid"] = X509SvidProvider(self.spiffe_ca, self.spiffe_id_of)
        providers["jwt-svid"] = JwtSvidProvider(self.spiffe_ca, self.spiffe_id_of)
        self.targets = TargetRegistry(self.store, self.barrier, self.audit)
        self.leases = LeaseService(
            self.store,
            self.audit,
            lambda lease: (
                self.targets.provider(lease.target) if lease.target else providers[lease.provider]
            ),
            clock,
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
                clock=clock,
                known_leases=self.ended_leases,
                record_usage=self._record_usage,
                x509_attestor=self.x509_attestor,
            )
        )
        self.statics = StaticSecrets(
            self.store, self.barrier, self.audit, self._static_backend, clock
        )
        self.alerts = AlertOutbox(
            self.store,
            Sinks(lambda: self.view.current.governance.sinks, self._sink_key),
            clock,
        )
        self.govern = Governance(
            GovernParts(
                store=self.store,
                view=self.view,
                audit=self.audit,
                leases=self.leases,
                statics=self.statics.all,
                clock=clock,
                sample_sessions=self.targets.sample_sessions,
                usable_users=self.targets.usable_users,
                sample_every=dt.timedelta(seconds=settings.session_sample_interval),
                alerts=self.alerts,
                extra_drafts=self._key_drafts,
                unowned_drafts=self._unowned_key_drafts,
                key_summaries=self._key_summaries,
            )
        )
        self.statics.on_used.append(self.govern.record)
        self.statics.on_exposed.append(self.govern.exposed)
        self.exposures = Exposures(
            ExposureParts(
                store=self.store,
                audit=self.audit,
                leases=self.leases,
                statics=self.statics,
                tokens=self.tokens,
                govern=self.govern,
                jwt_claims=lambda token: self.jwt_provider.decode(token, expired_too=True),
                token_key=self.barrier.token_key,
                owner_of=self._owner_of,
                clock=clock,
            )
        )
        self.github_keys = GithubKeys(settings.github_scanning_keys)
        self.keys = self._key_service(clock)
        self.workload, self.workload_socket = self._workload_api()
        self.system = SystemService(self.store, self.barrier, self.audit, self.auth)
        self.leadership = Leadership(self.store, may_lead=lambda: not self.barrier.sealed)
        self.lifecycle = Lifecycle(
            Sweep(
                SweepParts(
                    store=self.store,
                    barrier=self.barrier,
                    view=self.view,
                    leases=self.leases,
                    statics=self.statics,
                    signing_keys=self.signing_keys,
                    reconcile=self.reconcile_targets,
                    end_unjustified_runs=self.issuance.end_unjustified_runs,
                ),
                SweepSchedule(
                    pending_grace=dt.timedelta(seconds=settings.pending_grace),
                    housekeeping_every=dt.timedelta(seconds=settings.reconcile_interval),
                ),
                clock,
            ),
            self.barrier,
            settings.sweep_interval,
            gate=self.leadership.run,
        )
        self.worker = self.lifecycle.worker
        # Every process flushes the usage it saw; the leader evaluates, samples, delivers.
        # Each flush marks identities (and tells the feed), which wakes the pass again:
        # under load, woken passes are paced rather than back to back.
        self.governance_worker = LifecycleWorker(
            self._govern_pass,
            interval=settings.governance_interval,
            name="govern",
            min_gap=settings.governance_interval / 4,
        )
        self.govern.on_work.append(self._governance_due)
        # External revocations (sessions to terminate) start at once, not at the next sweep.
        self.leases.on_ended += [
            self.lifecycle.leases_ended,
            self._svids_ended,
            self.revoked_svids.invalidate,
            lambda ended: self.ended_leases.add(lease.id for lease in ended),
        ]
        self.estate.on_applied.append(self._estate_applied)
        self.system.on_opened += [
            self.signing_keys.ensure_current,
            self.lifecycle.rewrap_soon,
            self._spiffe_ensure,
        ]
        self.system.on_sealed += [
            self.signing_keys.forget,
            self.spiffe_ca.forget,
            self.keys.invalidate,
        ]
        self.system.on_rotated.append(self.lifecycle.rewrap_soon)
        # One process runs the background work; every process applies every change.
        self.leadership.on_elected += [
            self.lifecycle.wake,
            self.lifecycle.rewrap_soon,
            self.governance_worker.wake,
        ]
        self.leadership.duties += [self.feed.prune, self._spiffe_ensure, self._key_duties]
        self._subscribe_feed()

    def _subscribe_feed(self) -> None:
        """What this process does when another one commits a change."""
        subscribe(
            self.feed,
            NodeCaches(
                view=self.view,
                forget_api_tokens=self.auth.forget_cached,
                signing_keys=self.signing_keys,
                barrier=self.barrier,
                ended_leases=self.ended_leases,
                forget_target=self.targets.forget,
                wake=self.lifecycle.wake,
                rewrap_soon=self.lifecycle.rewrap_soon,
                governance_changed=self.govern.changed_elsewhere,
            ),
        )
        self.feed.subscribe(SPIFFE_CA_CHANGED, lambda _data: self._spiffe_ensure())
        self.feed.subscribe(KEYS_CHANGED, self.keys.invalidate_event)
        # A key's change (a rotation, a new minimum) is its identity's findings' change.
        self.feed.subscribe(KEYS_CHANGED, self._key_changed)
        # Leases another process ended: an SVID this one serves may be among them.
        self.feed.subscribe(LEASES_ENDED, self._svid_leases_ended_elsewhere)

    def _estate_applied(self, _plan: object) -> None:
        self.view.reload()
        self._spiffe_ensure()  # a trust domain declared (or changed) gets its CA now
        self.lifecycle.wake()  # retirements, approvals and vendors may end leases now
        self.govern.mark_all()  # owners, thresholds and grants change what is found

    def _workload_api(self) -> tuple[WorkloadIdentities, WorkloadSocket | None]:
        """What the Workload API serves (moved by bundle, estate and lease changes), and
        its socket when one is configured."""
        workload = WorkloadIdentities(
            WorkloadParts(
                issuance=self.issuance,
                view=self.view,
                ca=self.spiffe_ca,
                store=self.store,
                clock=self.clock,
                spiffe_id_of=self.spiffe_id_of,
                revoked=self.revoked_svids,
            )
        )
        self.spiffe_ca.on_changed.append(workload.changed)
        self.view.listeners.append(workload.estate_changed)
        path = self.settings.spiffe_socket
        return workload, None if path is None else WorkloadSocket(workload, path)

    def spiffe_id_of(self, identity: Identity) -> SpiffeId:
        """An identity's SPIFFE ID: as declared, or spiffe://<trust domain>/<env>/<id>."""
        if identity.spiffe_id is not None:
            return parse_spiffe_id(identity.spiffe_id)
        trust_domain = self.view.current.trust_domain
        if trust_domain is None:
            raise CaUnavailable("the estate declares no trust_domain")
        return default_spiffe_id(trust_domain, identity.environment, identity.id)

    def _spiffe_ensure(self) -> None:
        if self.barrier.sealed:
            self.spiffe_ca.forget()
        else:
            self.spiffe_ca.ensure()

    def _svids_ended(self, ended: Sequence[Lease]) -> None:
        self.workload.leases_ended(ended)

    def _svid_leases_ended_elsewhere(self, data: Mapping[str, Any]) -> None:
        self.revoked_svids.invalidate()
        self.workload.lease_ids_ended(data.get("lease_ids", ()))

    def _key_service(self, clock: Clock) -> KeyService:
        """Confidentiality keys: their own control path, decided by the same policy."""
        settings = _KeySettingsOfView(lambda: self.view.current)

        def identity(identity_id: str) -> Identity | None:
            return self.view.current.identities.get(identity_id)

        def vendor_of(who: Identity) -> Vendor | None:
            return self.view.current.vendors.get(who.vendor_id) if who.vendor_id else None

        service = KeyService(
            KeyParts(
                store=self.store,
                barrier=self.barrier,
                audit=self.audit,
                identity_of=identity,
                decide=cedar_decider(
                    lambda: self.policy.engine,
                    identity,
                    lambda: self.view.current.profiles,
                    vendor_of=vendor_of,
                    attestation_required=lambda who: (
                        self.view.current.control(who.kind).attestation_required
                    ),
                ),
                crypto_policy=settings.crypto_policy,
                approver_groups=settings.approver_groups,
                escrow_holders=settings.escrow_holders,
                clock=clock,
            )
        )
        service.on_used.append(self._record_usage)
        return service

    # Set after construction: governance is wired before the key service.
    def _key_drafts(self) -> PageDrafts:
        return self.keys.findings_pass()

    def _unowned_key_drafts(self) -> Mapping[str, Sequence[DraftLike]]:
        view = self.view.current
        return self.keys.unowned_findings(view.identities.values(), view.profiles)

    def _key_summaries(self) -> list[dict[str, Any]]:
        return self.keys.summaries()

    def _key_changed(self, data: Mapping[str, Any]) -> None:
        identity_id = self.keys.identity_of_key(data.get("key"))
        if identity_id is not None:
            self.govern.mark([identity_id])

    def _key_duties(self) -> None:
        if self.barrier.sealed:
            return
        self.keys.rotate_due()
        self.keys.purge_due()
        self.keys.expire_approvals()

    def _x509_attestation(self, clock: Clock) -> tuple[RevokedSvids, X509Attestor]:
        """Client certificates over mTLS, checked against the estate's x509 issuers (and
        the revoked X509-SVIDs of the own trust domain)."""
        revoked = RevokedSvids(self.store, clock)
        attestor = X509Attestor(
            lambda: tuple(self.view.current.issuers.values()),
            self._own_authorities,
            revoked.revoked,
            clock=clock,
        )
        self.view.listeners.append(lambda _view: attestor.invalidate())
        return revoked, attestor

    def _own_authorities(self) -> tuple[str | None, Sequence[x509.Certificate]]:
        """The estate's own trust domain and its CA's published X.509 authorities: what an
        x509 issuer of that trust domain (with no roots of its own) trusts."""
        trust_domain = self.view.current.trust_domain
        if trust_domain is None:
            return None, ()
        try:
            return trust_domain, self.spiffe_ca.bundle().x509_authorities
        except SpiffeError:  # sealed, or not made yet: nothing is trusted until it is
            return trust_domain, ()

    def _owner_of(self, identity_id: str) -> str | None:
        identity = self.view.current.identities.get(identity_id)
        return None if identity is None else identity.owner_id

    def _sink_key(self, sink_id: str) -> bytes | None:
        # Derived, never stored; none while sealed (alerts wait, pending, until unsealed).
        return None if self.barrier.sealed else sink_key_from(self.barrier.token_key, sink_id)

    def _record_usage(self, usage: Usage) -> None:
        # Set after construction: issuance is wired before governance.
        self.govern.record(usage)

    def _pdp(self, clock: Clock) -> Pdp:
        """AuthZEN (tether.authzen): the estate's applications, compiled per estate version."""
        pdp = Pdp(PdpParts(self.store, self.audit, lambda: self.view.current, self._engine, clock))
        pdp.update(self.view.current)
        self.view.listeners.append(pdp.update)
        return pdp

    def _engine(self) -> PolicyEngine | None:
        return self.policy.engine

    def _governance_due(self) -> None:
        # Marked identities are evaluated by the leader; another process would only
        # flush its usage early, whose feed event wakes the leader, whose flush wakes it
        # again: each process's flushes keep their interval.
        if self.leadership.leading:
            self.governance_worker.wake()

    def _govern_pass(self) -> None:
        self.govern.flush()
        if not self.barrier.sealed:
            self.keys.flush_usage()  # every process: its own use summaries
            self.pdp.flush_audit()  # and its own AuthZEN decision summaries
        self.leadership.run(self._govern_tick)

    def _govern_tick(self) -> None:
        if not self.barrier.sealed:
            self.govern.tick()

    def _static_backend(self, credential: StaticCredential) -> StaticBackend:
        return self.targets.static_backend(credential)

    # -- the node's life --
    def start(self) -> None:
        """Start background work; in dev mode, initialize and unseal from the key file."""
        dev = DevFiles(self.settings.dev_key_file, self.settings.dev_token_file)
        self.system.start(dev if self.settings.dev else None, self.settings.unseal_key_file)
        self.feed.start()
        self.leadership.start()
        self.lifecycle.start()
        self.governance_worker.start()
        if self.workload_socket is not None:
            self.workload_socket.start()

    def stop(self) -> None:
        if self.workload_socket is not None:
            self.workload_socket.stop()
        self.system.stop()
        self.lifecycle.stop()
        self.governance_worker.stop()
        self.govern.flush()
        with contextlib.suppress(TetherError):  # sealed: nothing was used since
            self.keys.flush_usage()
        with contextlib.suppress(TetherError):
            self.pdp.flush_audit(force=True)
        self.leadership.stop()
        self.feed.stop()
        self.store.close()

    def sweep(self) -> None:
        """One pass of lifecycle work, now (the worker runs it every `sweep_interval`)."""
        self.lifecycle.sweep()

    def reconcile_targets(self) -> dict[str, list[str]]:
        """Drop objects in target systems that carry Tether's prefix but no live lease."""
        return reconcile_targets(self.targets, self.store, self.audit)

    # -- system operations (tether.system) --
    def initialize(self, shares: int, threshold: int, seal_after: bool = False) -> InitResult:
        return self.system.initialize(shares, threshold, seal_after)

    def unseal(self, share: str, source: str) -> BarrierStatus:
        return self.system.unseal(share, source)

    def seal(self, principal: Principal) -> BarrierStatus:
        return self.system.seal(principal)

    def rotate(self, principal: Principal) -> int:
        return self.system.rotate(principal)

    def verify_audit(self) -> Verification:
        return self.system.verify_audit()
