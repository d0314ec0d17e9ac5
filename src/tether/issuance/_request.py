"""One request being decided: who asks (and through what), for which profile, when, for
how long and which scopes. It knows how to become a policy request, the bound of the
credential it may get, the pending lease and the audit entry; it holds no I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tether._internal.timeutil import format_time
from tether.estate import EstateView
from tether.issuance._subjects import Subject
from tether.model import (
    AuditEvent,
    ExpiryBound,
    Identity,
    Lease,
    LeaseState,
    Placement,
    Profile,
    Task,
    Unjustified,
    Usage,
    Vendor,
    bounded_expiry,
    justification_problems,
)
from tether.policy import Decision, PolicyRequest

#: Attestations whose selectors are recorded with each decision: there is no token to go
#: back to, only what the kernel or the certificate said.
_SELECTOR_VIAS = frozenset({"unix", "x509"})


@dataclass(frozen=True, slots=True)
class IssuanceRequest:
    """A request for a credential, resolved against one estate view at one instant."""

    #: The policy action: issue | exchange | renew.
    action: str
    subject: Subject
    profile: Profile
    #: The estate it is decided under (vendors, owners, kind controls).
    view: EstateView
    now: dt.datetime
    ttl: dt.timedelta
    #: The scopes that would be minted.
    scopes: tuple[str, ...]
    #: What the identity's entitlement grants on the profile; None: not entitled.
    entitled: tuple[str, ...] | None
    task: Task | None = None
    intent: str | None = None
    source_ip: str | None = None
    #: Delegation: whom the caller acts for (RFC 8693 `act`).
    actor: str | None = None
    #: A credential the new one must not outlive (the one it was exchanged from, or the
    #: parent of the lease being renewed).
    parent: Lease | None = None
    #: The whole actor chain, nearest first (`actor` is its head).
    delegation: tuple[str, ...] = ()
    #: The credential the actor presented (its actor_token): the new one dies with it.
    actor_lease: Lease | None = None

    @property
    def identity(self) -> Identity:
        return self.subject.identity

    @property
    def vendor(self) -> Vendor | None:
        return self.view.vendors.get(self.identity.vendor_id or "")

    def unjustified(self) -> list[Unjustified]:
        """The one justification rule, with the placement of the credential the request
        stands on (a task token, an issued token, the lease being renewed)."""
        standing = self.subject.lease
        return justification_problems(
            self.identity,
            self.now,
            owners=self.view.owners,
            vendors=self.view.vendors,
            justified_for=standing.placement if standing is not None else None,
            departed=self.view.suspended_owners,
        )

    def policy_request(self) -> PolicyRequest:
        """Everything a decision is made over; the kind's controls from the view."""
        control = self.view.control(self.identity.kind)
        subject, task = self.subject, self.task
        return PolicyRequest(
            identity=self.identity,
            action=self.action,
            profile=self.profile,
            entitled_scopes=self.entitled,
            requested_scopes=self.scopes,
            requested_ttl=self.ttl,
            now=self.now,
            vendor=self.vendor,
            attested=subject.attested,
            issuer_id=subject.issuer_id,
            claims=subject.claims,
            task_id=task.id if task else None,
            task_name=task.name if task else None,
            intent=self.intent,
            source_ip=self.source_ip,
            actor=self.actor,
            delegation=self.delegation,
            run=task.run if task else None,
            kind_max_ttl=control.max_ttl,
            attestation_required=control.attestation_required,
            attestation_rule=self.identity.attest is not None,
        )

    def bound(self) -> ExpiryBound:
        """Invariant 3: the earliest end of everything that justifies the credential."""
        identity, now, task, parent = self.identity, self.now, self.task, self.parent
        evidence, vendor = self.subject.evidence, self.vendor
        control = self.view.control(identity.kind)
        approval = identity.approval
        run = task.run if task else None
        actor_lease = self.actor_lease
        return bounded_expiry(
            [
                ExpiryBound("requested ttl", now + self.ttl),
                ExpiryBound("run window end", run.ends_at) if run and run.ends_at else None,
                ExpiryBound("principal token expiry", run.principal_expires_at)
                if run and run.principal_expires_at
                else None,
                ExpiryBound("actor credential expiry", actor_lease.expires_at)
                if actor_lease
                else None,
                ExpiryBound("profile max_ttl", now + self.profile.max_ttl),
                ExpiryBound(f"{identity.kind.value} max_ttl", now + control.max_ttl),
                ExpiryBound("task deadline", task.ends_at) if task else None,
                ExpiryBound("attestation expiry", evidence.expires_at) if evidence else None,
                ExpiryBound("approval expiry", approval.expires_at) if approval else None,
                ExpiryBound("vendor contract end", vendor.contract_ends) if vendor else None,
                ExpiryBound("identity expiry", identity.expires_at)
                if identity.expires_at
                else None,
                ExpiryBound("parent credential expiry", parent.expires_at) if parent else None,
            ]
        )

    def new_lease(
        self, lease_id: str, bound: ExpiryBound, *, audience: str | None, target: str | None
    ) -> Lease:
        """The lease of the credential about to be minted, `pending`, recording the
        placement the credential is justified for."""
        identity = self.identity
        standing = self.subject.lease
        return Lease(
            id=lease_id,
            identity_id=identity.id,
            owner_id=identity.owner_id,
            provider=self.profile.provider,
            issued_at=self.now,
            expires_at=bound.at,
            state=LeaseState.PENDING,
            task_id=self.task.id if self.task else None,
            # Derived from the presented credential (a task token or an issued token).
            parent_id=standing.id if standing is not None else None,
            profile_id=self.profile.id,
            scopes=self.scopes,
            audience=audience,
            actor=self.actor,
            target=target,
            placement=Placement.of(identity),
            delegation=self.delegation,
        )

    def usage(self, action: str) -> Usage:
        """This request as usage evidence of its identity. The credential used is the one
        presented (a task token, an issued token, the lease renewed), not the one minted:
        the new one has not been used yet, and keying a rollup per minted lease would
        grow an identity's usage with every issuance."""
        subject = self.subject
        evidence = subject.evidence
        return Usage(
            identity_id=self.identity.id,
            at=self.now,
            action=action,
            credential=subject.lease.id if subject.lease is not None else "",
            entitlement=self.profile.id,
            source=self.source_ip,
            scopes=self.scopes,
            subject=evidence.subject if evidence is not None else subject.claims.get("sub"),
            environment=subject.claims.get("environment"),
            actor=self.actor,
        )

    def audit_event(
        self,
        action: str,
        decision: Decision,
        *,
        lease: Lease | None = None,
        bound: ExpiryBound | None = None,
        by: str | None = None,
    ) -> AuditEvent:
        """The evidence of this decision; `by` names the caller when it is not the
        workload itself (an operator renewing a lease)."""
        identity, task = self.identity, self.task
        return AuditEvent(
            action=action,
            actor=by or f"workload:{identity.id}",
            result="allow" if decision.allowed else "deny",
            identity_id=identity.id,
            owner_id=identity.owner_id,
            task_id=self.task.id if self.task else None,
            reason="; ".join(decision.reasons) or None,
            justification=identity.justification,
            details={
                "profile": self.profile.id,
                "via": self.subject.via,
                "decision": {
                    "allowed": decision.allowed,
                    "policy_ids": list(decision.policy_ids),
                    "errors": list(decision.errors),
                },
                "context": dict(decision.context),
                "lease_id": lease.id if lease else None,
                "expires_at": format_time(lease.expires_at) if lease else None,
                "bounded_by": bound.name if bound else None,
                "source_ip": self.source_ip,
                **({"delegation": list(self.delegation)} if self.delegation else {}),
                **(
                    {"run": {"purpose": task.run.purpose, "principal": task.run.principal}}
                    if task is not None and task.run is not None
                    else {}
                ),
                # What the kernel said of a local caller, or what its client certificate
                # says: the selectors that attested it.
                **(
                    {"selectors": dict(self.subject.claims)}
                    if self.subject.via in _SELECTOR_VIAS
                    else {}
                ),
            },
        )
