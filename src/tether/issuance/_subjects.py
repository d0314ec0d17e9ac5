"""Who a request speaks for: attestation, a one-time join token, a task token or an
issued token, each checked before anything is decided."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tether._internal.tokens import is_well_formed, token_hash
from tether.attest import (
    AttestationError,
    Evidence,
    IssuerUnavailable,
    LocalCaller,
    match_identity,
    match_local,
)
from tether.issuance._parts import TASK_PROVIDER, IssuanceParts
from tether.issuance.errors import (
    AttestationUnavailable,
    InvalidGrant,
    InvalidRequest,
    TaskTokenRequired,
)
from tether.model import Identity, Lease, LeaseState, Task, TaskStatus
from tether.providers import ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a request speaks for, once its evidence has been checked."""

    identity: Identity
    via: str  # attestation | x509 | unix | join-token | task-token | token | renewal
    attested: bool
    issuer_id: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)
    task: Task | None = None
    #: The lease the presented credential stands for (task token or issued token), or
    #: the lease being renewed: what the request was justified by before.
    lease: Lease | None = None
    evidence: Evidence | None = None

    @classmethod
    def of_lease(cls, identity: Identity, lease: Lease, task: Task | None, via: str) -> Subject:
        """A subject that speaks through an existing lease (and its task, if any)."""
        return cls(
            identity=identity,
            via=via,
            attested=True,
            issuer_id=task.issuer_id if task else None,
            claims=dict(task.claims) if task else {},
            task=task,
            lease=lease,
        )


class Subjects:
    """Checks presented credentials and says whom they stand for."""

    def __init__(self, parts: IssuanceParts) -> None:
        self._parts = parts

    def resolve(self, token: str, token_type: str) -> Subject:
        """Check a presented credential: a Tether token (task or issued) or attestation."""
        if not token:
            raise InvalidRequest(
                "subject_token is required (or present a client certificate over mTLS)"
            )
        if token_type == ACCESS_TOKEN_TYPE:
            subject = self.from_lease(token)
            if subject is None:
                raise InvalidGrant("the subject token is not a valid Tether token")
            return subject
        if token_type == JWT_TOKEN_TYPE:
            return self.from_lease(token) or self.attest(token)
        raise InvalidRequest(f"unsupported subject_token_type {token_type!r}")

    def resolve_bearer(self, bearer: str) -> Subject:
        """A bearer credential whose type is told by its shape (task token or JWT)."""
        token_type = ACCESS_TOKEN_TYPE if is_well_formed(bearer) else JWT_TOKEN_TYPE
        return self.resolve(bearer, token_type)

    def task_of(self, task_token: str) -> Subject:
        subject = self.from_lease(task_token)
        if subject is None or subject.via != "task-token":
            raise TaskTokenRequired("a task token is required")
        return subject

    def attest(self, token: str) -> Subject:
        view = self._parts.view.current
        try:
            evidence = self._parts.attestor.verify(token)
            identity = match_identity(evidence, view.attested_by_issuer.get(evidence.issuer_id, ()))
        except IssuerUnavailable as exc:
            # The IdP's keys cannot be fetched: a retry may work, the token may be fine.
            raise AttestationUnavailable(f"attestation not checked: {exc}") from None
        except AttestationError as exc:
            raise InvalidGrant(f"attestation refused: {exc}") from None
        return Subject(
            identity=identity,
            via="attestation",
            attested=True,
            issuer_id=evidence.issuer_id,
            claims=dict(evidence.selectors),
            evidence=evidence,
        )

    def certificate(self, chain: Sequence[bytes]) -> Subject:
        """A client certificate chain (DER, leaf first) presented over mTLS."""
        attestor = self._parts.x509_attestor
        if attestor is None:
            raise InvalidGrant("attestation refused: no x509 issuer is trusted")
        view = self._parts.view.current
        try:
            evidence = attestor.verify(chain)
            identity = match_identity(evidence, view.attested_by_issuer.get(evidence.issuer_id, ()))
        except AttestationError as exc:
            raise InvalidGrant(f"attestation refused: {exc}") from None
        return Subject(
            identity=identity,
            via="x509",
            attested=True,
            issuer_id=evidence.issuer_id,
            claims=dict(evidence.selectors),
            evidence=evidence,
        )

    def local(self, caller: LocalCaller) -> Subject:
        """A local caller the kernel vouches for (the Workload API's socket)."""
        view = self._parts.view.current
        try:
            identity = match_local(caller, view.attested_locally)
        except AttestationError as exc:
            raise InvalidGrant(f"attestation refused: {exc}") from None
        return Subject(
            identity=identity,
            via="unix",
            attested=True,
            issuer_id="unix",
            claims=caller.selectors,
        )

    def join(self, token: str, now: dt.datetime) -> Subject:
        """A one-time join token, used up by this call."""
        parts = self._parts
        with parts.store.transaction() as tx:
            record = tx.consume_join_token(token_hash(parts.token_key(), token), now)
        if record is None:
            raise InvalidGrant("the join token is unknown, used or expired")
        identity = parts.view.current.identities.get(record.identity_id)
        if identity is None:
            raise InvalidGrant("the join token's identity no longer exists")
        return Subject(
            identity=identity,
            via="join-token",
            attested=True,
            issuer_id="join-token",
            claims={"join_token": record.id},
        )

    def lease_for(self, token: str) -> Lease | None:
        """The lease a Tether token stands for (opaque by its keyed hash, JWT by its jti)."""
        standing = self.standing(token)
        return None if standing is None else standing[0]

    def standing(self, token: str) -> tuple[Lease, Task | None] | None:
        """The lease a Tether token stands for and the task it was issued in. A live one
        this process has seen is answered from memory while no end of it is known (see
        `tether.lease.EndedLeases`); a JWT's signature and expiry are checked every time."""
        parts = self._parts
        if is_well_formed(token):
            key = token_hash(parts.token_key(), token)
            lease_id = None
        else:
            claims = parts.jwt_provider.decode(token)
            if claims is None:
                return None
            lease_id = str(claims["jti"])
            key = f"jti:{lease_id}"
        known = parts.known_leases
        remembered = known.recall(key)
        if remembered is not None and remembered[0].expires_at > parts.clock():
            return remembered  # past its end, it may have been renewed: ask the store
        generation = known.generation
        with parts.store.read() as tx:
            lease = tx.get_lease(lease_id) if lease_id else tx.lease_by_token_hash(key)
            if lease is None:
                return None
            task = tx.get_task(lease.task_id) if lease.task_id is not None else None
        if lease.state is LeaseState.ACTIVE and (task is None or task.status is TaskStatus.ACTIVE):
            known.remember(key, lease, task, generation)
        return lease, task

    def remembered(self, token: str) -> tuple[Lease, Task | None] | None:
        """`standing` when memory alone can answer it (a JWT verified here before, a
        live lease remembered while the feed is current); None when it would have to
        verify a signature or read the store."""
        parts = self._parts
        if is_well_formed(token):
            key = token_hash(parts.token_key(), token)
        else:
            claims = parts.jwt_provider.verified(token)
            if claims is None:
                return None
            key = f"jti:{claims['jti']}"
        remembered = parts.known_leases.recall(key)
        if remembered is None or remembered[0].expires_at <= parts.clock():
            return None
        return remembered

    def from_lease(self, token: str) -> Subject | None:
        standing = self.standing(token)
        if standing is None:
            return None
        lease, task = standing
        if lease.state is not LeaseState.ACTIVE or lease.expires_at <= self._parts.clock():
            raise InvalidGrant("the subject token is no longer active")
        if lease.task_id is not None and (task is None or task.status is not TaskStatus.ACTIVE):
            raise InvalidGrant("the task behind the subject token has ended")
        identity = self._parts.view.current.identities.get(lease.identity_id)
        if identity is None:
            raise InvalidGrant("the subject token's identity no longer exists")
        via = "task-token" if lease.provider == TASK_PROVIDER else "token"
        return Subject.of_lease(identity, lease, task, via)
