"""RFC 8693 token exchange: evidence or a Tether token in, a bounded token out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from tether.estate import EstateView
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
from tether.issuance.errors import (
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
    WindowFull,
)
from tether.model import Identity, Lease, LeaseState, Profile
from tether.policy import Decision, entitled_scopes
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
        self, req: ExchangeRequest, subject: Subject, actor_subject: Subject | None
    ) -> IssuanceRequest:
        """What is being asked for, resolved against the current estate view."""
        parts = self._parts
        view = parts.view.current
        identity = subject.identity
        now = parts.clock()
        parent = subject.lease if subject.via == "token" else None
        wanted = [w for w in (req.audience, req.resource) if w]
        if parent is not None and not wanted:
            wanted = [parent.profile_id or parent.audience or ""]
        profile = select_profile(view, identity, wanted, req.requested_token_type)
        entitled = entitled_scopes(identity, profile)
        if parent is not None:
            narrow(parent, profile, req, now)
            if entitled is not None:
                # A derived credential can only narrow what it was exchanged from.
                entitled = tuple(s for s in entitled if s in parent.scopes)
        delegation = parent.delegation if parent is not None else ()
        actor = delegation[0] if delegation else None
        if actor_subject is not None:
            actor = actor_subject.identity.id
            delegation = delegated(view, identity, actor, delegation)
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
            delegation=delegation,
            actor_lease=actor_subject.lease if actor_subject is not None else None,
        )

    def exchange(self, req: ExchangeRequest) -> ExchangeResult:
        if not req.subject_token and req.client_certificate:
            subject = self._subjects.certificate(req.client_certificate)
        else:
            subject = self._subjects.resolve(req.subject_token, req.subject_token_type)
        actor_subject = None
        if req.actor_token:
            actor_type = req.actor_token_type or JWT_TOKEN_TYPE
            actor_subject = self._subjects.resolve(req.actor_token, actor_type)
        request = self._request(req, subject, actor_subject)
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
        try:
            return self._mint_decided(request, action)
        except WindowFull as exc:
            # Refused where the issuance is serialized: evidence like any other denial.
            decision = Decision(False, ("guardrail:run-window",), (str(exc),), (), {})
            deny(self._parts, request, decision, action)

    def _mint_decided(
        self, request: IssuanceRequest, action: str
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
            still_justified(tx, request, implicit, lease.audience)
            if implicit is not None:
                tx.put_task(implicit)
            tx.insert_leases([lease])
            self._parts.record([event], tx)

        self._parts.store.commit_together(write)
        self._parts.record_usage(request.usage("exchange"))
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


def narrow(parent: Lease, profile: Profile, req: ExchangeRequest, now: dt.datetime) -> None:
    """A credential exchanged from another may only narrow it (RFC 8693 delegation):
    the same audience (another one is token passthrough), no scope it lacks, and no
    longer life than it has left."""
    audience = profile.audience or profile.id
    if parent.audience is not None and audience != parent.audience:
        raise InvalidTarget(
            f"token passthrough: the subject token was issued for {parent.audience}, not "
            f"{audience}; exchange a credential for {audience} from the task token instead"
        )
    if req.scope is not None:
        beyond = [s for s in dict.fromkeys(req.scope) if s not in parent.scopes]
        if beyond:
            raise InvalidScope(
                f"scope(s) {', '.join(beyond)} widen the subject token's "
                f"({' '.join(parent.scopes) or 'none'}): each hop may only narrow"
            )
    if req.requested_ttl is not None and now + req.requested_ttl > parent.expires_at:
        left = max(0, int((parent.expires_at - now).total_seconds()))
        raise InvalidRequest(
            f"requested TTL {int(req.requested_ttl.total_seconds())}s outlives the subject "
            f"token ({left}s left): each hop may only narrow"
        )


def delegated(
    view: EstateView, subject: Identity, actor: str, before: tuple[str, ...]
) -> tuple[str, ...]:
    """The actor chain once `actor` acts for `subject`, nearest first; refused when the
    subject's `may_act` does not name it, or the chain outgrows a depth limit."""
    if actor not in subject.may_act:
        raise UnauthorizedClient(
            f"{actor} may not act for {subject.id} (its may_act: "
            f"{', '.join(subject.may_act) or 'none'})"
        )
    if actor == subject.id or actor in before:
        raise InvalidRequest(f"delegation loop: {actor} is already in the chain")
    chain = (actor, *before)
    members = [subject, *(view.identities[a] for a in chain if a in view.identities)]
    strictest = min(members, key=lambda i: i.delegation_depth)
    if len(chain) > strictest.delegation_depth:
        raise InvalidRequest(
            f"the delegation chain would be {len(chain)} deep ({' > '.join(chain)}); "
            f"{strictest.id} allows {strictest.delegation_depth}"
        )
    return chain
