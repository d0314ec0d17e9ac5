"""RFC 8693 token exchange: evidence or a Tether token in, a bounded token out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from tether.issuance._decide import (
    decide,
    deny,
    still_justified,
    task_for,
    with_implicit_task,
)
from tether.issuance._parts import IssuanceParts, new_id
from tether.issuance._profiles import select_profile
from tether.issuance._request import IssuanceRequest
from tether.issuance._subjects import Subject, Subjects
from tether.model import LeaseState, Profile
from tether.policy import entitled_scopes
from tether.providers import JWT_TOKEN_TYPE, IssuedCredential
from tether.store import Tx


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    subject_token: str = field(repr=False)
    subject_token_type: str
    audience: str | None = None
    resource: str | None = None
    scope: tuple[str, ...] | None = None
    requested_ttl: dt.timedelta | None = None
    requested_token_type: str | None = None
    actor_token: str | None = field(default=None, repr=False)
    actor_token_type: str | None = None
    task_id: str | None = None
    intent: str | None = None
    source_ip: str | None = None
    #: The client certificate chain presented over mTLS (DER, leaf first): the subject
    #: when no subject_token is given.
    client_certificate: tuple[bytes, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    access_token: str = field(repr=False)
    issued_token_type: str
    expires_at: dt.datetime
    expires_in: int
    scope: tuple[str, ...]
    lease_id: str
    bounded_by: str


class Exchange:
    def __init__(self, parts: IssuanceParts, subjects: Subjects) -> None:
        self._parts = parts
        self._subjects = subjects

    def _request(
        self, req: ExchangeRequest, subject: Subject, actor: str | None
    ) -> IssuanceRequest:
        """What is being asked for, resolved against the current estate view."""
        parts = self._parts
        view = parts.view.current
        identity = subject.identity
        wanted = [w for w in (req.audience, req.resource) if w]
        profile = select_profile(view, identity, wanted, req.requested_token_type)
        entitled = entitled_scopes(identity, profile)
        parent = subject.lease if subject.via == "token" else None
        if parent is not None and entitled is not None:
            # A derived credential can only narrow what it was exchanged from.
            entitled = tuple(s for s in entitled if s in parent.scopes)
        scopes = req.scope if req.scope is not None else (entitled or ())
        return IssuanceRequest(
            action="exchange" if (parent is not None or actor is not None) else "issue",
            subject=subject,
            profile=profile,
            view=view,
            now=parts.clock(),
            ttl=req.requested_ttl or profile.max_ttl,
            scopes=tuple(scopes),
            entitled=entitled,
            task=task_for(parts, subject, req.task_id),
            intent=req.intent,
            source_ip=req.source_ip,
            actor=actor,
            parent=parent,
        )

    def exchange(self, req: ExchangeRequest) -> ExchangeResult:
        if not req.subject_token and req.client_certificate:
            subject = self._subjects.certificate(req.client_certificate)
        else:
            subject = self._subjects.resolve(req.subject_token, req.subject_token_type)
        actor = None
        if req.actor_token:
            actor_type = req.actor_token_type or JWT_TOKEN_TYPE
            actor = self._subjects.resolve(req.actor_token, actor_type).identity.id
        request = self._request(req, subject, actor)
        result, _ = self._mint(request)
        return result

    def issue_local(
        self, subject: Subject, profile: Profile, ttl: dt.timedelta | None = None
    ) -> tuple[ExchangeResult, IssuedCredential]:
        """A credential for a caller attested by other means than a token (the Workload
        API's kernel attestation): the same decision, lease, audit and bounds."""
        parts = self._parts
        request = IssuanceRequest(
            action="issue",
            subject=subject,
            profile=profile,
            view=parts.view.current,
            now=parts.clock(),
            ttl=ttl or profile.max_ttl,
            scopes=(),
            entitled=entitled_scopes(subject.identity, profile),
            task=None,
            intent=None,
            source_ip=None,
            actor=None,
            parent=None,
        )
        return self._mint(request, "credential.issue")

    def _mint(
        self, request: IssuanceRequest, action: str = "token.exchange"
    ) -> tuple[ExchangeResult, IssuedCredential]:
        decision = decide(self._parts, request)
        if not decision.allowed:
            deny(self._parts, request, decision, action)
        bound = request.bound()
        profile = request.profile
        provider = self._parts.providers[profile.provider]
        # Minted in-process, the credential is made first and its lease written `active`
        # at once: it leaves this node only after that commit (invariant 1), so a crash in
        # between loses a token nobody holds, and there is no pending state to settle.
        request, implicit = with_implicit_task(request)
        lease = request.new_lease(
            new_id("lse"), bound, audience=profile.audience or profile.id, target=None
        )
        credential = provider.issue(lease, request.identity, profile)
        lease = replace(lease, state=LeaseState.ACTIVE, token_hash=credential.token_hash)
        event = request.audit_event(action, decision, lease=lease, bound=bound)

        def write(tx: Tx) -> None:
            # What the request was checked against may have ended since (on another node,
            # or before this process heard): checked again where the insert is serialized.
            still_justified(tx, request, implicit)
            if implicit is not None:
                tx.put_task(implicit)
            tx.insert_leases([lease])
            self._parts.record([event], tx)

        self._parts.store.commit_together(write)
        self._parts.record_usage(request.usage("exchange", lease))
        result = ExchangeResult(
            access_token=credential.secret,
            issued_token_type=credential.token_type,
            expires_at=bound.at,
            expires_in=max(0, int((bound.at - request.now).total_seconds())),
            scope=request.scopes,
            lease_id=lease.id,
            bounded_by=bound.name,
        )
        return result, credential
