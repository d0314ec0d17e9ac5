from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from tether._internal.timeutil import format_time, utcnow
from tether.attest import (
    AttestationError,
    Attestor,
    Evidence,
    IssuerUnavailable,
    match_identity,
)
from tether.audit import AuditLog
from tether.auth.tokens import is_well_formed, new_token, token_hash
from tether.estate import EstateView, EstateViewHolder
from tether.issuance.errors import OAuthError
from tether.lease import LeaseService, RevokeTarget
from tether.model import (
    AuditEvent,
    ExpiryBound,
    Identity,
    IdentityStatus,
    Lease,
    LeaseState,
    Profile,
    Task,
    TaskStatus,
    bounded_expiry,
)
from tether.policy import Decision, PolicyEngine, PolicyRequest, entitled_scopes
from tether.providers import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    ExternalProvider,
    JwtProvider,
    OpaqueTokenProvider,
    Provider,
)
from tether.store import JoinTokenRecord, Store, Tx
from tether.targets import renewable_kinds

log = logging.getLogger("tether.issuance")

TASK_PROVIDER = "task"
#: Profiles issued by the token endpoint; database and cache credentials go through /v1/creds.
_EXCHANGE_PROVIDERS = {"jwt", "token"}
MAX_TASK_TTL = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a request speaks for, once its evidence has been checked."""

    identity: Identity
    via: str  # attestation | join-token | task-token | token
    attested: bool
    issuer_id: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)
    task: Task | None = None
    #: The lease the presented credential stands for (task token or issued token).
    lease: Lease | None = None
    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    subject_token: str
    subject_token_type: str
    audience: str | None = None
    resource: str | None = None
    scope: tuple[str, ...] | None = None
    requested_ttl: dt.timedelta | None = None
    requested_token_type: str | None = None
    actor_token: str | None = None
    actor_token_type: str | None = None
    task_id: str | None = None
    intent: str | None = None
    source_ip: str | None = None


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    access_token: str
    issued_token_type: str
    expires_at: dt.datetime
    expires_in: int
    scope: tuple[str, ...]
    lease_id: str
    bounded_by: str


@dataclass(frozen=True, slots=True)
class CredentialResult:
    """A credential for a target system: connection details, the secret (shown once)."""

    lease: Lease
    secret: str = field(repr=False)
    details: Mapping[str, Any] = field(default_factory=dict)
    bounded_by: str = ""


@dataclass(frozen=True, slots=True)
class StartedTask:
    task: Task
    token: str = field(repr=False)
    token_lease: Lease | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class StoreJtiStore:
    """Single-use attestation token ids, remembered in the shared store (all replicas)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def remember(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        with self._store.transaction() as tx:
            return tx.remember_jti(issuer, jti, expires_at)


class PolicyHolder:
    """The compiled policy set for the current estate view; None when it failed to compile."""

    def __init__(self) -> None:
        self.engine: PolicyEngine | None = None
        self.error: str | None = None

    def update(self, view: EstateView) -> None:
        try:
            self.engine, self.error = PolicyEngine.compile(view.policies), None
        except Exception as exc:  # fail closed: every decision denies until it compiles
            self.engine, self.error = None, f"the policy set failed to compile: {exc}"
            log.error("policy set failed to compile; denying everything")


def _justification_problem(identity: Identity, view: EstateView, now: dt.datetime) -> str | None:
    if identity.status is not IdentityStatus.ACTIVE:
        return f"identity {identity.id} is {identity.status.value}"
    if identity.approval is not None and identity.approval.expires_at <= now:
        return (
            f"approval by {identity.approval.by} expired at "
            f"{format_time(identity.approval.expires_at)}"
        )
    if identity.expires_at is not None and identity.expires_at <= now:
        return f"identity {identity.id} expired at {format_time(identity.expires_at)}"
    vendor = view.vendors.get(identity.vendor_id or "")
    if vendor is not None and vendor.contract_ends <= now:
        return f"vendor {vendor.id} contract ended at {format_time(vendor.contract_ends)}"
    if identity.owner_id not in view.owners:
        return f"owner {identity.owner_id} was removed"
    return None


class IssuanceService:
    def __init__(
        self,
        *,
        store: Store,
        audit: AuditLog,
        view: EstateViewHolder,
        attestor: Attestor,
        policy: PolicyHolder,
        providers: Mapping[str, Provider],
        jwt_provider: JwtProvider,
        task_tokens: OpaqueTokenProvider,
        leases: LeaseService,
        token_key: Callable[[], bytes],
        issuer_url: Callable[[], str],
        target_provider: Callable[[str], ExternalProvider] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._audit = audit
        self._view = view
        self._attestor = attestor
        self._policy = policy
        self._providers = providers
        self._jwt = jwt_provider
        self._task_tokens = task_tokens
        self._leases = leases
        self._token_key = token_key
        self._issuer_url = issuer_url
        self._clock = clock
        self._target_provider = target_provider or _no_targets

    # -- evidence --
    def _attest(self, token: str) -> Subject:
        view = self._view.current
        try:
            evidence = self._attestor.verify(token)
            identity = match_identity(evidence, view.attested_by_issuer.get(evidence.issuer_id, ()))
        except IssuerUnavailable as exc:
            # The IdP's keys cannot be fetched: a retry may work, the token may be fine.
            raise OAuthError(
                "temporarily_unavailable", f"attestation not checked: {exc}", 503
            ) from None
        except AttestationError as exc:
            raise OAuthError("invalid_grant", f"attestation refused: {exc}", 400) from None
        return Subject(
            identity=identity,
            via="attestation",
            attested=True,
            issuer_id=evidence.issuer_id,
            claims=dict(evidence.selectors),
            evidence=evidence,
        )

    def _lease_for(self, token: str) -> Lease | None:
        if is_well_formed(token):
            with self._store.read() as tx:
                return tx.lease_by_token_hash(token_hash(self._token_key(), token))
        claims = self._jwt.decode(token)
        if claims is None:
            return None
        with self._store.read() as tx:
            return tx.get_lease(str(claims["jti"]))

    def _from_lease(self, token: str) -> Subject | None:
        lease = self._lease_for(token)
        if lease is None:
            return None
        now = self._clock()
        if lease.state is not LeaseState.ACTIVE or lease.expires_at <= now:
            raise OAuthError("invalid_grant", "the subject token is no longer active")
        task = None
        if lease.task_id is not None:
            with self._store.read() as tx:
                task = tx.get_task(lease.task_id)
            if task is None or task.status is not TaskStatus.ACTIVE:
                raise OAuthError("invalid_grant", "the task behind the subject token has ended")
        identity = self._view.current.identities.get(lease.identity_id)
        if identity is None:
            raise OAuthError("invalid_grant", "the subject token's identity no longer exists")
        via = "task-token" if lease.provider == TASK_PROVIDER else "token"
        return Subject(
            identity=identity,
            via=via,
            attested=True,
            issuer_id=task.issuer_id if task else None,
            claims=dict(task.claims) if task else {},
            task=task,
            lease=lease,
        )

    def resolve(self, token: str, token_type: str) -> Subject:
        """Check a presented credential: a Tether token (task or issued) or attestation."""
        if not token:
            raise OAuthError("invalid_request", "subject_token is required")
        if token_type == ACCESS_TOKEN_TYPE:
            subject = self._from_lease(token)
            if subject is None:
                raise OAuthError("invalid_grant", "the subject token is not a valid Tether token")
            return subject
        if token_type == JWT_TOKEN_TYPE:
            return self._from_lease(token) or self._attest(token)
        raise OAuthError("invalid_request", f"unsupported subject_token_type {token_type!r}")

    # -- tasks --
    def start_task(
        self, bearer: str, name: str, ttl: dt.timedelta, source_ip: str | None
    ) -> StartedTask:
        """A workload attests once per task (attestation JWT or one-time join token)."""
        now = self._clock()
        subject = self._join(bearer, now) if is_well_formed(bearer) else self._attest(bearer)
        view = self._view.current
        problem = _justification_problem(subject.identity, view, now)
        if problem is not None:
            self._audit_denied_task(subject, name, problem, source_ip)
            raise OAuthError("access_denied", problem, 403)
        ttl = min(ttl, MAX_TASK_TTL)
        evidence_expires = subject.evidence.expires_at if subject.evidence else None
        run_key = _run_key(subject)
        with self._store.transaction() as tx:
            task = tx.active_task_for_run(subject.identity.id, run_key) if run_key else None
            if task is None:
                task = Task(
                    id=new_id("tsk"),
                    identity_id=subject.identity.id,
                    name=name,
                    status=TaskStatus.ACTIVE,
                    created_at=now,
                    deadline=now + ttl,
                    attestation_expires_at=evidence_expires,
                    issuer_id=subject.issuer_id,
                    run_key=run_key,
                    claims=dict(subject.claims),
                )
                action = "task.start"
            else:
                # A second attestation from the same run (a later job) joins the run's task
                # and carries its evidence forward.
                task = replace(task, attestation_expires_at=evidence_expires)
                action = "task.join"
            tx.put_task(task)
            credential = self._task_tokens.mint()
            lease = Lease(
                id=new_id("lse"),
                identity_id=task.identity_id,
                owner_id=subject.identity.owner_id,
                provider=TASK_PROVIDER,
                issued_at=now,
                expires_at=task.ends_at,
                state=LeaseState.ACTIVE,
                task_id=task.id,
                token_hash=credential.token_hash,
            )
            tx.insert_leases([lease])
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action=action,
                        actor=f"workload:{subject.identity.id}",
                        identity_id=subject.identity.id,
                        owner_id=subject.identity.owner_id,
                        task_id=task.id,
                        justification=subject.identity.justification,
                        details={
                            "name": task.name,
                            "deadline": format_time(task.deadline),
                            "ends_at": format_time(task.ends_at),
                            "via": subject.via,
                            "issuer": subject.issuer_id,
                            "run_key": run_key,
                            "token_lease": lease.id,
                            "source_ip": source_ip,
                        },
                    )
                ],
                now,
            )
        return StartedTask(task=task, token=credential.secret, token_lease=lease)

    def _join(self, token: str, now: dt.datetime) -> Subject:
        with self._store.transaction() as tx:
            record = tx.consume_join_token(token_hash(self._token_key(), token), now)
        if record is None:
            raise OAuthError("invalid_grant", "the join token is unknown, used or expired")
        identity = self._view.current.identities.get(record.identity_id)
        if identity is None:
            raise OAuthError("invalid_grant", "the join token's identity no longer exists")
        return Subject(
            identity=identity,
            via="join-token",
            attested=True,
            issuer_id="join-token",
            claims={"join_token": record.id},
        )

    def _audit_denied_task(
        self, subject: Subject, name: str, problem: str, source_ip: str | None
    ) -> None:
        with self._store.transaction() as tx:
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="task.start",
                        actor=f"workload:{subject.identity.id}",
                        result="deny",
                        identity_id=subject.identity.id,
                        owner_id=subject.identity.owner_id,
                        reason=problem,
                        justification=subject.identity.justification,
                        details={"name": name, "via": subject.via, "source_ip": source_ip},
                    )
                ],
            )

    def create_join_token(
        self, identity_id: str, ttl: dt.timedelta, actor: str
    ) -> tuple[str, JoinTokenRecord]:
        identity = self._view.current.identities.get(identity_id)
        if identity is None:
            raise OAuthError("invalid_request", f"no identity {identity_id!r}", 404)
        token = new_token()
        now = self._clock()
        record = JoinTokenRecord(
            id=new_id("jt"),
            token_hash=token_hash(self._token_key(), token),
            identity_id=identity_id,
            created_at=now,
            expires_at=now + ttl,
            created_by=actor,
        )
        with self._store.transaction() as tx:
            tx.put_join_token(record)
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="join_token.create",
                        actor=actor,
                        identity_id=identity_id,
                        owner_id=identity.owner_id,
                        details={
                            "join_token_id": record.id,
                            "expires_at": format_time(record.expires_at),
                        },
                    )
                ],
            )
        return token, record

    # -- issuance --
    def _select_profile(self, req: ExchangeRequest, identity: Identity) -> Profile:
        view = self._view.current
        entitled = {e.profile_id for e in identity.entitlements}
        wanted = [w for w in (req.audience, req.resource) if w]
        if wanted:
            candidates = [
                p for p in view.profiles.values() if any(w in (p.audience, p.id) for w in wanted)
            ]
        else:
            candidates = [
                view.profiles[p]
                for p in entitled
                if p in view.profiles and view.profiles[p].provider in _EXCHANGE_PROVIDERS
            ]
            if len(candidates) != 1:
                raise OAuthError(
                    "invalid_request", "audience or resource is required to choose what to issue"
                )
        if req.requested_token_type == JWT_TOKEN_TYPE:
            candidates = [p for p in candidates if p.provider == "jwt"]
        if not candidates:
            raise OAuthError("invalid_target", f"no profile serves {' / '.join(wanted)}")
        mine = [p for p in candidates if p.id in entitled]
        if len(mine) > 1:
            raise OAuthError(
                "invalid_target",
                "several entitled profiles match: name one by "
                "its id as audience (" + ", ".join(sorted(p.id for p in mine)) + ")",
            )
        profile = mine[0] if mine else candidates[0]
        if profile.provider not in _EXCHANGE_PROVIDERS:
            raise OAuthError(
                "invalid_target",
                f"profile {profile.id} ({profile.provider}) is "
                "issued through /v1/creds, not the token endpoint",
            )
        return profile

    def exchange(self, req: ExchangeRequest) -> ExchangeResult:
        subject = self.resolve(req.subject_token, req.subject_token_type)
        actor = None
        if req.actor_token:
            actor_subject = self.resolve(req.actor_token, req.actor_token_type or JWT_TOKEN_TYPE)
            actor = actor_subject.identity.id
        identity = subject.identity
        profile = self._select_profile(req, identity)
        now = self._clock()
        entitled = entitled_scopes(identity, profile)
        parent = subject.lease if subject.via == "token" else None
        if parent is not None and entitled is not None:
            # A derived credential can only narrow what it was exchanged from.
            entitled = tuple(s for s in entitled if s in parent.scopes)
        scopes = req.scope if req.scope is not None else (entitled or ())
        ttl = req.requested_ttl or profile.max_ttl
        task = subject.task
        if req.task_id is not None and (task is None or task.id != req.task_id):
            task = self._own_task(req.task_id, identity)
        action = "exchange" if (parent is not None or actor is not None) else "issue"
        request = self._policy_request(
            action,
            identity,
            profile,
            entitled,
            tuple(scopes),
            ttl,
            now,
            subject,
            task,
            intent=req.intent,
            source_ip=req.source_ip,
            actor=actor,
        )
        decision = self._decide(request)
        if not decision.allowed:
            self._deny(subject, profile, decision, req, task, "token.exchange")

        bound = self._bound(identity, profile, now, ttl, task, subject.evidence, parent)
        provider = self._providers[profile.provider]
        with self._store.transaction() as tx:
            lease, task = self._pending_lease(
                tx,
                subject,
                profile,
                task,
                bound,
                now,
                tuple(scopes),
                audience=profile.audience or profile.id,
                actor=actor,
            )
            credential = provider.issue(lease, identity, profile)
            lease = replace(lease, state=LeaseState.ACTIVE, token_hash=credential.token_hash)
            tx.put_lease(lease)
            self._audit_decision(subject, profile, decision, lease, bound, req, task, tx)
        return ExchangeResult(
            access_token=credential.secret,
            issued_token_type=credential.token_type,
            expires_at=bound.at,
            expires_in=max(0, int((bound.at - now).total_seconds())),
            scope=tuple(scopes),
            lease_id=lease.id,
            bounded_by=bound.name,
        )

    def _bound(
        self,
        identity: Identity,
        profile: Profile,
        now: dt.datetime,
        ttl: dt.timedelta,
        task: Task | None,
        evidence: Evidence | None,
        parent: Lease | None,
    ) -> ExpiryBound:
        """Invariant 3: the earliest end of everything that justifies the credential."""
        view = self._view.current
        vendor = view.vendors.get(identity.vendor_id or "")
        control = view.control(identity.kind)
        return bounded_expiry(
            [
                ExpiryBound("requested ttl", now + ttl),
                ExpiryBound("profile max_ttl", now + profile.max_ttl),
                ExpiryBound(f"{identity.kind.value} max_ttl", now + control.max_ttl),
                ExpiryBound("task deadline", task.ends_at) if task else None,
                ExpiryBound("attestation expiry", evidence.expires_at) if evidence else None,
                ExpiryBound("approval expiry", identity.approval.expires_at)
                if identity.approval
                else None,
                ExpiryBound("vendor contract end", vendor.contract_ends) if vendor else None,
                ExpiryBound("identity expiry", identity.expires_at)
                if identity.expires_at
                else None,
                ExpiryBound("parent credential expiry", parent.expires_at) if parent else None,
            ]
        )

    def renew(
        self, lease_id: str, caller: Subject | None, actor: str, ttl: dt.timedelta | None = None
    ) -> tuple[Lease, ExpiryBound]:
        """Extend an opaque credential's lease after a fresh policy decision (action renew).

        The new end is bounded again by every justification; a renewal never shortens a
        lease and never outlives its task, approval, vendor contract or parent.
        """
        now = self._clock()
        with self._store.read() as tx:
            lease = tx.get_lease(lease_id)
            parent = tx.get_lease(lease.parent_id) if lease and lease.parent_id else None
            task = tx.get_task(lease.task_id) if lease and lease.task_id else None
        if lease is None or (
            caller is not None and (caller.task is None or lease.task_id != caller.task.id)
        ):
            raise OAuthError("invalid_request", f"no lease {lease_id!r} for this caller", 404)
        if lease.state is not LeaseState.ACTIVE or lease.expires_at <= now:
            raise OAuthError("invalid_grant", f"lease {lease_id} is no longer active")
        if lease.provider not in ("token", *renewable_kinds()):
            raise OAuthError(
                "invalid_request",
                f"{lease.provider} credentials are not renewed in place; exchange again",
            )
        if task is not None and task.status is not TaskStatus.ACTIVE:
            raise OAuthError("invalid_grant", "the lease's task has ended")
        view = self._view.current
        identity = view.identities.get(lease.identity_id)
        profile = view.profiles.get(lease.profile_id or "")
        if identity is None or profile is None:
            raise OAuthError("invalid_grant", "the lease's identity or profile was removed")
        ttl = ttl or profile.max_ttl
        subject = Subject(
            identity=identity,
            via="renewal",
            attested=True,
            issuer_id=task.issuer_id if task else None,
            claims=dict(task.claims) if task else {},
            task=task,
            lease=lease,
        )
        decision = self._decide(
            self._policy_request(
                "renew",
                identity,
                profile,
                entitled_scopes(identity, profile),
                lease.scopes,
                ttl,
                now,
                subject,
                task,
                actor=lease.actor,
            )
        )
        renewal = ExchangeRequest(subject_token="", subject_token_type="")
        if not decision.allowed:
            self._deny(subject, profile, decision, renewal, task, "lease.renew")
        bound = self._bound(identity, profile, now, ttl, task, None, parent)
        if lease.target is not None:
            # The target's own expiry (VALID UNTIL) moves first: if the lease moved and the
            # role did not, the credential would die before its lease says it does.
            extended = replace(lease, expires_at=max(lease.expires_at, bound.at))
            self._target_provider(lease.target).renew(extended)
        with self._store.transaction() as tx:
            current = tx.get_lease(lease_id)
            if current is None or current.state is not LeaseState.ACTIVE:
                raise OAuthError("invalid_grant", f"lease {lease_id} ended meanwhile")
            renewed = replace(current, expires_at=max(current.expires_at, bound.at))
            tx.put_lease(renewed)
            self._audit_decision(
                subject,
                profile,
                decision,
                renewed,
                bound,
                renewal,
                task,
                tx,
                action="lease.renew",
                actor=actor,
            )
        return renewed, bound

    def issue_credential(
        self,
        profile_id: str,
        bearer: str,
        *,
        task_id: str | None = None,
        ttl: dt.timedelta | None = None,
        intent: str | None = None,
        source_ip: str | None = None,
    ) -> CredentialResult:
        """A credential in a target system (PostgreSQL role, Redis user), in two phases.

        Phase 1 commits the lease as `pending` before the target is touched (invariant 1);
        phase 2 creates the object; phase 3 activates the lease. A crash between them
        leaves a pending lease that recovery revokes at the target (idempotently).
        """
        token_type = ACCESS_TOKEN_TYPE if is_well_formed(bearer) else JWT_TOKEN_TYPE
        subject = self.resolve(bearer, token_type)
        if subject.via == "token":
            raise OAuthError("invalid_grant", "present a task token or an attestation token")
        view = self._view.current
        identity = subject.identity
        profile = view.profiles.get(profile_id)
        # Decide before looking: a caller not entitled to a profile learns nothing of
        # whether it, or its target, exists; the answer is the same either way.
        not_entitled = OAuthError(
            "access_denied",
            f"denied: identity {identity.id} is not entitled to profile {profile_id}",
            403,
        )
        if profile is None or profile.target is None:
            raise not_entitled
        now = self._clock()
        task = subject.task
        if task_id is not None and (task is None or task.id != task_id):
            task = self._own_task(task_id, identity)
        entitled = entitled_scopes(identity, profile)
        ttl = ttl or profile.max_ttl
        decision = self._decide(
            self._policy_request(
                "issue",
                identity,
                profile,
                entitled,
                tuple(entitled or ()),
                ttl,
                now,
                subject,
                task,
                intent=intent,
                source_ip=source_ip,
            )
        )
        request = ExchangeRequest(subject_token="", subject_token_type="", source_ip=source_ip)
        if not decision.allowed:
            if entitled is None:
                self._audit_decision(
                    subject, profile, decision, None, None, request, task, action="credential.issue"
                )
                raise not_entitled
            self._deny(subject, profile, decision, request, task, "credential.issue")
        provider = self._target_provider(profile.target)
        bound = self._bound(identity, profile, now, ttl, task, subject.evidence, None)
        with self._store.transaction() as tx:
            lease, task = self._pending_lease(
                tx,
                subject,
                profile,
                task,
                bound,
                now,
                tuple(entitled or ()),
                audience=profile.target,
                target=profile.target,
            )
        crash_point("after-lease-commit")
        try:
            credential = provider.issue(lease, identity, profile)
            crash_point("after-provider-issue")
        except Exception:
            # The object may or may not exist: revocation (idempotent) settles it.
            self._leases.revoke(
                RevokeTarget(lease_id=lease.id), "issuance failed", "system:issuance"
            )
            raise
        with self._store.transaction() as tx:
            current = tx.get_lease(lease.id)
            if current is None or current.state is not LeaseState.PENDING:
                ended = True
            else:
                ended = False
                lease = replace(current, state=LeaseState.ACTIVE)
                tx.put_lease(lease)
                self._audit_decision(
                    subject,
                    profile,
                    decision,
                    lease,
                    bound,
                    request,
                    task,
                    tx,
                    action="credential.issue",
                )
        if ended:
            # Revoked while it was being made (its task ended): never hand it out.
            self._leases.revoke(
                RevokeTarget(lease_id=lease.id), "revoked during issuance", "system:issuance"
            )
            raise OAuthError("invalid_grant", "the credential was revoked while being issued")
        return CredentialResult(
            lease=lease,
            secret=credential.secret,
            details=dict(credential.extra),
            bounded_by=bound.name,
        )

    def _pending_lease(
        self,
        tx: Tx,
        subject: Subject,
        profile: Profile,
        task: Task | None,
        bound: ExpiryBound,
        now: dt.datetime,
        scopes: tuple[str, ...],
        *,
        audience: str | None,
        actor: str | None = None,
        target: str | None = None,
    ) -> tuple[Lease, Task | None]:
        """Invariant 1, first step: the lease is written, `pending`, before anything is
        minted. A credential from bare attestation gets its implicit task here too."""
        if task is None and subject.evidence is not None:
            task = self._implicit_task(tx, subject, now)
        identity = subject.identity
        lease = Lease(
            id=new_id("lse"),
            identity_id=identity.id,
            owner_id=identity.owner_id,
            provider=profile.provider,
            issued_at=now,
            expires_at=bound.at,
            state=LeaseState.PENDING,
            task_id=task.id if task else None,
            # Derived from the presented credential (a task token or an issued token).
            parent_id=subject.lease.id if subject.lease is not None else None,
            profile_id=profile.id,
            scopes=scopes,
            audience=audience,
            actor=actor,
            target=target,
        )
        tx.insert_leases([lease])
        return lease, task

    def _own_task(self, task_id: str, identity: Identity) -> Task:
        with self._store.read() as tx:
            task = tx.get_task(task_id)
        if task is None or task.identity_id != identity.id:
            raise OAuthError("invalid_request", f"no task {task_id!r} for {identity.id}")
        if task.status is not TaskStatus.ACTIVE:
            raise OAuthError("invalid_grant", f"task {task_id} has ended")
        return task

    def _implicit_task(self, tx: Tx, subject: Subject, now: dt.datetime) -> Task:
        """A credential straight from attestation lives in a task that ends with the evidence."""
        assert subject.evidence is not None
        task = Task(
            id=new_id("tsk"),
            identity_id=subject.identity.id,
            name=f"implicit:{subject.evidence.jti or subject.evidence.subject}"[:255],
            status=TaskStatus.ACTIVE,
            created_at=now,
            deadline=subject.evidence.expires_at,
            attestation_expires_at=subject.evidence.expires_at,
            issuer_id=subject.issuer_id,
            implicit=True,
            claims=dict(subject.claims),
        )
        tx.put_task(task)
        return task

    def _policy_request(
        self,
        action: str,
        identity: Identity,
        profile: Profile,
        entitled: tuple[str, ...] | None,
        scopes: tuple[str, ...],
        ttl: dt.timedelta,
        now: dt.datetime,
        subject: Subject,
        task: Task | None,
        *,
        intent: str | None = None,
        source_ip: str | None = None,
        actor: str | None = None,
    ) -> PolicyRequest:
        """Everything a decision is made over; the kind's controls and vendor from the view."""
        view = self._view.current
        control = view.control(identity.kind)
        return PolicyRequest(
            identity=identity,
            action=action,
            profile=profile,
            entitled_scopes=entitled,
            requested_scopes=scopes,
            requested_ttl=ttl,
            now=now,
            vendor=view.vendors.get(identity.vendor_id or ""),
            attested=subject.attested,
            issuer_id=subject.issuer_id,
            claims=subject.claims,
            task_id=task.id if task else None,
            task_name=task.name if task else None,
            intent=intent,
            source_ip=source_ip,
            actor=actor,
            kind_max_ttl=control.max_ttl,
            attestation_required=control.attestation_required,
        )

    def _deny(
        self,
        subject: Subject,
        profile: Profile,
        decision: Decision,
        request: ExchangeRequest,
        task: Task | None,
        action: str,
    ) -> NoReturn:
        """A denial is evidence too: audited with its policy ids, then a 403 with the reasons."""
        self._audit_decision(subject, profile, decision, None, None, request, task, action=action)
        reasons = "; ".join(decision.reasons) or "denied by policy"
        raise OAuthError("access_denied", f"denied: {reasons}", 403)

    def _decide(self, request: PolicyRequest) -> Decision:
        engine = self._policy.engine
        if engine is None:
            return Decision(
                allowed=False,
                policy_ids=("tether:no-policy-set",),
                reasons=(self._policy.error or "no policy set",),
                errors=(),
                context={},
            )
        return engine.evaluate(request)

    def _audit_decision(
        self,
        subject: Subject,
        profile: Profile,
        decision: Decision,
        lease: Lease | None,
        bound: ExpiryBound | None,
        req: ExchangeRequest,
        task: Task | None,
        tx: Tx | None = None,
        action: str = "token.exchange",
        actor: str | None = None,
    ) -> None:
        identity = subject.identity
        event = AuditEvent(
            action=action,
            actor=actor or f"workload:{identity.id}",
            result="allow" if decision.allowed else "deny",
            identity_id=identity.id,
            owner_id=identity.owner_id,
            task_id=task.id if task else None,
            reason="; ".join(decision.reasons) or None,
            justification=identity.justification,
            details={
                "profile": profile.id,
                "via": subject.via,
                "decision": {
                    "allowed": decision.allowed,
                    "policy_ids": list(decision.policy_ids),
                    "errors": list(decision.errors),
                },
                "context": dict(decision.context),
                "lease_id": lease.id if lease else None,
                "expires_at": format_time(lease.expires_at) if lease else None,
                "bounded_by": bound.name if bound else None,
                "source_ip": req.source_ip,
            },
        )
        if tx is not None:
            self._audit.append(tx, [event])
            return
        with self._store.transaction() as own:
            self._audit.append(own, [event])

    # -- introspection and revocation --
    def introspect(self, token: str) -> dict[str, Any]:
        lease = self._lease_for(token) if token else None
        now = self._clock()
        if lease is None or lease.state is not LeaseState.ACTIVE or lease.expires_at <= now:
            return {"active": False}
        if lease.task_id is not None:
            with self._store.read() as tx:
                task = tx.get_task(lease.task_id)
            if task is None or task.status is not TaskStatus.ACTIVE:
                return {"active": False}
        result: dict[str, Any] = {
            "active": True,
            "scope": " ".join(lease.scopes),
            "client_id": lease.identity_id,
            "sub": lease.identity_id,
            "aud": lease.audience,
            "iss": self._issuer_url(),
            "exp": int(lease.expires_at.timestamp()),
            "iat": int(lease.issued_at.timestamp()),
            "nbf": int(lease.issued_at.timestamp()),
            "jti": lease.id,
            "token_type": "Bearer",
            "tether_lease": lease.id,
            "tether_owner": lease.owner_id,
            "tether_task": lease.task_id,
            "tether_profile": lease.profile_id,
        }
        if lease.actor:
            result["act"] = {"sub": lease.actor}
        return {k: v for k, v in result.items() if v is not None}

    def revoke_token(self, token: str, actor: str) -> int:
        """RFC 7009: revoke the lease a token stands for, and everything derived from it."""
        lease = self._lease_for(token) if token else None
        if lease is None or not lease.state.live:
            return 0  # RFC 7009 §2.2: an unknown or dead token is not an error
        return self._leases.revoke(RevokeTarget(lease_id=lease.id), "revoked by its holder", actor)

    def task_of(self, task_token: str) -> Subject:
        subject = self._from_lease(task_token)
        if subject is None or subject.via != "task-token":
            raise OAuthError("invalid_token", "a task token is required", 401)
        return subject


def crash_point(name: str) -> None:
    """Crash tests kill the process here (TETHER_TEST_CRASH_AT=<name>); otherwise nothing."""
    if os.environ.get("TETHER_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _no_targets(name: str) -> ExternalProvider:
    raise OAuthError("invalid_target", f"no target {name!r} is registered", 404)


def _run_key(subject: Subject) -> str | None:
    claims = subject.claims
    if subject.evidence is None or "run_id" not in claims:
        return None
    return "|".join(
        [
            subject.issuer_id or "",
            claims.get("repository", ""),
            claims["run_id"],
            claims.get("run_attempt", "1"),
        ]
    )
