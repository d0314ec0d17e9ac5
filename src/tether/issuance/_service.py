"""The issuance facade: one object with the methods transports call, each job in its
own module (subjects, tasks, exchange, renewal, target credentials, introspection)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tether.attest import LocalCaller
from tether.issuance._credentials import CredentialAsk, CredentialResult, TargetCredentials
from tether.issuance._exchange import Exchange, ExchangeRequest, ExchangeResult
from tether.issuance._introspection import Introspection
from tether.issuance._parts import IssuanceParts
from tether.issuance._renewal import Renewal
from tether.issuance._runs import RunAsk
from tether.issuance._subjects import Subject, Subjects
from tether.issuance._tasks import StartedTask, Tasks
from tether.model import ExpiryBound, Lease, Profile
from tether.providers import IssuedCredential
from tether.store import JoinTokenRecord


class IssuanceService:
    """A workload proves what it is, policy decides, a lease is written, a credential is
    minted, and all of it is audited."""

    def __init__(self, parts: IssuanceParts) -> None:
        #: What it was built from (a test builds another one on its own clock from it).
        self.parts = parts
        self._subjects = Subjects(parts)
        self._tasks = Tasks(parts, self._subjects)
        self._exchange = Exchange(parts, self._subjects)
        self._renewal = Renewal(parts)
        self._credentials = TargetCredentials(parts, self._subjects)
        self._introspection = Introspection(parts, self._subjects)

    # -- evidence --
    def resolve(self, token: str, token_type: str) -> Subject:
        """Check a presented credential: a Tether token (task or issued) or attestation."""
        return self._subjects.resolve(token, token_type)

    def task_of(self, task_token: str) -> Subject:
        """The subject of a task token; TaskTokenRequired for anything else."""
        return self._subjects.task_of(task_token)

    # -- tasks --
    def start_task(
        self,
        bearer: str | None,
        name: str,
        ttl: dt.timedelta,
        source_ip: str | None,
        client_certificate: Sequence[bytes] = (),
        run: RunAsk | None = None,
    ) -> StartedTask:
        """A workload attests once per task: an attestation JWT, a one-time join token,
        or (`bearer` None) the client certificate chain it presented over mTLS. An
        agent's `run` declares its intent, the principal it acts for and its window."""
        return self._tasks.start_task(bearer, name, ttl, source_ip, client_certificate, run)

    def create_join_token(
        self, identity_id: str, ttl: dt.timedelta, actor: str
    ) -> tuple[str, JoinTokenRecord]:
        return self._tasks.create_join_token(identity_id, ttl, actor)

    # -- issuance --
    def exchange(self, req: ExchangeRequest) -> ExchangeResult:
        return self._exchange.exchange(req)

    def local_subject(self, caller: LocalCaller) -> Subject:
        """The identity a local caller is, by its unix rule (InvalidGrant if none)."""
        return self._subjects.local(caller)

    def issue_local(
        self, subject: Subject, profile: Profile, ttl: dt.timedelta | None = None
    ) -> tuple[ExchangeResult, IssuedCredential]:
        """Issue `profile` to a subject attested without a token (the Workload API)."""
        return self._exchange.issue_local(subject, profile, ttl)

    def renew(
        self, lease_id: str, caller: Subject | None, actor: str, ttl: dt.timedelta | None = None
    ) -> tuple[Lease, ExpiryBound]:
        """Extend a lease after a fresh decision; never shorter, never past a justification."""
        return self._renewal.renew(lease_id, caller, actor, ttl)

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
        """A credential in a target system (PostgreSQL role, Redis user), in two phases."""
        ask = CredentialAsk(task_id=task_id, ttl=ttl, intent=intent, source_ip=source_ip)
        return self._credentials.issue(profile_id, bearer, ask)

    # -- introspection and revocation --
    def introspect(self, token: str) -> dict[str, Any]:
        return self._introspection.introspect(token)

    def introspect_from_memory(self, token: str) -> dict[str, Any] | None:
        """What `introspect` would answer, when this process can tell from memory alone
        (no signature check, no store read: fit for the event loop); else None."""
        return self._introspection.from_memory(token)

    def revoke_token(self, token: str, actor: str) -> int:
        """RFC 7009: revoke the lease a token stands for, and everything derived from it."""
        return self._introspection.revoke_token(token, actor)

    def end_unjustified_runs(self, limit: int = 500) -> int:
        """End every active agent run whose principal no longer justifies it (left,
        suspended, no longer lets the agent act for it, or its proving token ended)."""
        return self._tasks.end_unjustified_runs(limit)

    def check(self, token: str, tool: str | None, scopes: Sequence[str] | None) -> dict[str, Any]:
        """May this token do this now (a tool gateway asks)? The live decision, reasons."""
        return self._tasks.check(token, tool, scopes)
