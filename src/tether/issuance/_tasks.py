"""Tasks (one attestation per execution window) and the join tokens hosts attest with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tether._internal.timeutil import format_time
from tether._internal.tokens import is_well_formed, new_token, token_hash
from tether.issuance._parts import TASK_PROVIDER, IssuanceParts, new_id
from tether.issuance._subjects import Subject, Subjects
from tether.issuance.errors import AccessDenied, NotFound
from tether.model import (
    AuditEvent,
    Lease,
    LeaseState,
    Placement,
    Task,
    TaskStatus,
    Usage,
    justification_problems,
)
from tether.store import JoinTokenRecord, Tx

MAX_TASK_TTL = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class StartedTask:
    task: Task
    token: str = field(repr=False)
    token_lease: Lease | None = None


def run_key(subject: Subject) -> str | None:
    """Identifies a CI run (issuer, repository, run id, attempt): one run, one task."""
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


def _actor(subject: Subject) -> str:
    return f"workload:{subject.identity.id}"


class Tasks:
    def __init__(self, parts: IssuanceParts, subjects: Subjects) -> None:
        self._parts = parts
        self._subjects = subjects

    def start_task(
        self,
        bearer: str | None,
        name: str,
        ttl: dt.timedelta,
        source_ip: str | None,
        client_certificate: Sequence[bytes] = (),
    ) -> StartedTask:
        """A workload attests once per task: an attestation JWT, a one-time join token,
        or (with no bearer) the client certificate it presented over mTLS."""
        parts = self._parts
        now = parts.clock()
        subjects = self._subjects
        if bearer is None:
            subject = subjects.certificate(client_certificate)
        elif is_well_formed(bearer):
            subject = subjects.join(bearer, now)
        else:
            subject = subjects.attest(bearer)
        view = parts.view.current
        problems = justification_problems(
            subject.identity,
            now,
            owners=view.owners,
            vendors=view.vendors,
            departed=view.suspended_owners,
        )
        if problems:
            self._audit_denied(subject, name, problems[0].reason, source_ip)
            raise AccessDenied(problems[0].reason)
        credential = parts.task_tokens.mint()

        def write(tx: Tx) -> tuple[Task, Lease]:
            task, action = self._task(tx, subject, name, now, min(ttl, MAX_TASK_TTL))
            tx.put_task(task)
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
                placement=Placement.of(subject.identity),
            )
            tx.insert_leases([lease])
            event = AuditEvent(
                action=action,
                actor=_actor(subject),
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
                    "run_key": task.run_key,
                    "token_lease": lease.id,
                    "source_ip": source_ip,
                },
            )
            parts.audit.append(tx, [event], now)
            return task, lease

        # Tasks start as often as credentials are issued: their writes commit together too.
        task, lease = parts.store.commit_together(write)
        evidence = subject.evidence
        parts.record_usage(
            Usage(
                identity_id=subject.identity.id,
                at=now,
                action="task.start",
                credential=lease.id,
                source=source_ip,
                subject=evidence.subject if evidence is not None else None,
                environment=subject.claims.get("environment"),
            )
        )
        return StartedTask(task=task, token=credential.secret, token_lease=lease)

    def _task(
        self, tx: Tx, subject: Subject, name: str, now: dt.datetime, ttl: dt.timedelta
    ) -> tuple[Task, str]:
        """A new task, or the run's task joined by a later attestation of the same run."""
        evidence_expires = subject.evidence.expires_at if subject.evidence else None
        key = run_key(subject)
        task = tx.active_task_for_run(subject.identity.id, key) if key else None
        if task is not None:
            # A second attestation from the same run (a later job) joins the run's task
            # and carries its evidence forward.
            return replace(task, attestation_expires_at=evidence_expires), "task.join"
        task = Task(
            id=new_id("tsk"),
            identity_id=subject.identity.id,
            name=name,
            status=TaskStatus.ACTIVE,
            created_at=now,
            deadline=now + ttl,
            attestation_expires_at=evidence_expires,
            issuer_id=subject.issuer_id,
            run_key=key,
            claims=dict(subject.claims),
        )
        return task, "task.start"

    def _audit_denied(
        self, subject: Subject, name: str, problem: str, source_ip: str | None
    ) -> None:
        event = AuditEvent(
            action="task.start",
            actor=_actor(subject),
            result="deny",
            identity_id=subject.identity.id,
            owner_id=subject.identity.owner_id,
            reason=problem,
            justification=subject.identity.justification,
            details={"name": name, "via": subject.via, "source_ip": source_ip},
        )
        self._parts.record([event])

    def create_join_token(
        self, identity_id: str, ttl: dt.timedelta, actor: str
    ) -> tuple[str, JoinTokenRecord]:
        parts = self._parts
        identity = parts.view.current.identities.get(identity_id)
        if identity is None:
            raise NotFound(f"no identity {identity_id!r}")
        token = new_token()
        now = parts.clock()
        record = JoinTokenRecord(
            id=new_id("jt"),
            token_hash=token_hash(parts.token_key(), token),
            identity_id=identity_id,
            created_at=now,
            expires_at=now + ttl,
            created_by=actor,
        )
        event = AuditEvent(
            action="join_token.create",
            actor=actor,
            identity_id=identity_id,
            owner_id=identity.owner_id,
            details={"join_token_id": record.id, "expires_at": format_time(record.expires_at)},
        )
        with parts.store.transaction() as tx:
            tx.put_join_token(record)
            parts.audit.append(tx, [event])
        return token, record
