"""Tasks (one attestation per execution window) and the join tokens hosts attest with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from tether._internal.timeutil import format_time
from tether._internal.tokens import is_well_formed, new_token, token_hash
from tether.estate import EstateView
from tether.issuance._decide import decide
from tether.issuance._parts import TASK_PROVIDER, IssuanceParts, new_id
from tether.issuance._request import IssuanceRequest
from tether.issuance._runs import RunAsk, Runs, run_problem
from tether.issuance._subjects import Subject, Subjects
from tether.issuance.errors import AccessDenied, IssuanceError, NotFound
from tether.lease import RevokeTarget
from tether.model import (
    AgentRun,
    AuditEvent,
    Lease,
    LeaseState,
    Placement,
    Task,
    TaskStatus,
    Usage,
    justification_problems,
)
from tether.policy import entitled_scopes
from tether.store import JoinTokenRecord, LeaseFilter, TaskFilter, Tx

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
        self._runs = Runs(parts, subjects)
        #: The estate version and policy set the runs' credentials were last decided on.
        self._authorized: tuple[int, int] | None = None

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
        or (with no bearer) the client certificate it presented over mTLS. An agent's
        `run` declares its intent, principal and window (tether.issuance._runs)."""
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
        agent_run = None
        if run is not None:
            try:
                agent_run = self._runs.prepare(subject, run, now)
            except IssuanceError as exc:
                self._audit_denied(subject, name, str(exc), source_ip)
                raise
        credential = parts.task_tokens.mint()
        ttl = min(ttl, MAX_TASK_TTL)

        def write(tx: Tx) -> tuple[Task, Lease]:
            if agent_run is not None:
                task, action = self._run_task(subject, name, now, ttl, agent_run), "task.start"
            else:
                task, action = self._task(tx, subject, name, now, ttl)
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
                    **({} if task.run is None else {"run": task.run.to_spec()}),
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

    def end_unjustified_runs(self, limit: int) -> int:
        parts = self._parts
        ended = self._end_runs(limit)
        # A new estate (its policies, entitlements, approvals) re-decides every live
        # credential of every run: what is no longer permitted dies mid-run.
        version = (parts.view.current.version, id(parts.policy.engine))
        if version != self._authorized:
            self._authorized = version
            ended += self.reauthorize_runs(limit)
        return ended

    def _active_runs(self, limit: int) -> Iterator[list[Task]]:
        """Every active agent run, a page at a time (read when the page is asked for)."""
        after = None
        while True:
            with self._parts.store.read() as tx:
                page = tx.list_tasks(
                    TaskFilter(status="active", agent_runs=True, after_id=after, limit=limit)
                )
            yield page
            if len(page) < limit:
                return
            after = page[-1].id

    def reauthorize_runs(self, limit: int) -> int:
        """Decide every live credential of every active run again; revoke the denied."""
        parts = self._parts
        revoked = 0
        for page in self._active_runs(limit):
            view, now = parts.view.current, parts.clock()
            with parts.store.read() as tx:
                live = {t.id: tx.find_leases(LeaseFilter(task_id=t.id)) for t in page}
            for task in page:
                for lease in live[task.id]:
                    reasons = self._denied_now(task, lease, view, now)
                    if reasons is not None:
                        revoked += parts.leases.revoke(
                            RevokeTarget(lease_id=lease.id),
                            f"re-authorization denied: {reasons}",
                            "system:reauthorization",
                        )
        return revoked

    def check(
        self, token: str, tool: str | None, scopes: Sequence[str] | None
    ) -> dict[str, object]:
        """A tool gateway's question: may this token do this now? The live decision and
        its reasons: the lease is live, the tool and scopes are what it was issued for,
        and the request would still be permitted (policy, run, principal, entitlement)."""
        parts = self._parts
        standing = self._subjects.standing(token) if token else None
        if standing is None:
            return {"allowed": False, "reasons": ["the token is not a Tether token"]}
        lease, task = standing
        now = parts.clock()
        answer: dict[str, object] = {
            "lease": lease.id,
            "identity": lease.identity_id,
            "tool": lease.profile_id,
            "task": lease.task_id,
            "delegation": list(lease.delegation),
        }
        if task is not None and task.run is not None:
            answer["run"] = {"purpose": task.run.purpose, "principal": task.run.principal}
        reasons: list[str] = []
        if lease.state is not LeaseState.ACTIVE or lease.expires_at <= now:
            reasons.append(f"the token is no longer active ({lease.state.value})")
        elif task is not None and task.status is not TaskStatus.ACTIVE:
            reasons.append(f"its task {task.id} has ended")
        if tool is not None and tool not in (lease.profile_id, lease.audience):
            reasons.append(f"the token was issued for {lease.profile_id}, not {tool}")
        beyond = [s for s in scopes or () if s not in lease.scopes]
        if beyond:
            reasons.append(f"scope(s) {', '.join(beyond)} were not granted to it")
        if not reasons and task is not None:
            denied = self._denied_now(task, lease, parts.view.current, now)
            if denied is not None:
                reasons.append(denied)
        return {**answer, "allowed": not reasons, "reasons": reasons}

    def _denied_now(
        self, task: Task, lease: Lease, view: EstateView, now: dt.datetime
    ) -> str | None:
        """Why the lease would be refused if it were asked for now (None: it would not)."""
        if lease.provider == TASK_PROVIDER or lease.profile_id is None:
            return None
        identity = view.identities.get(lease.identity_id)
        profile = view.profiles.get(lease.profile_id)
        if identity is None or profile is None:
            return "its identity or profile is gone from the estate"
        request = IssuanceRequest(
            action="exchange" if lease.delegation else "issue",
            subject=Subject.of_lease(identity, lease, task, "token"),
            profile=profile,
            view=view,
            now=now,
            ttl=max(lease.expires_at - now, dt.timedelta(seconds=1)),
            scopes=lease.scopes,
            entitled=entitled_scopes(identity, profile),
            task=task,
            actor=lease.actor,
            delegation=lease.delegation,
        )
        decision = decide(self._parts, request)
        return None if decision.allowed else "; ".join(decision.reasons) or "denied by policy"

    def _end_runs(self, limit: int) -> int:
        parts = self._parts
        ended = 0
        for page in self._active_runs(limit):
            view, now = parts.view.current, parts.clock()
            stopped = []
            with parts.store.read() as tx:
                for task in page:
                    agent = view.identities.get(task.identity_id)
                    assert task.run is not None
                    problem = (
                        "the run's identity is gone"
                        if agent is None
                        else run_problem(tx, task.run, agent, view, now)
                    )
                    if problem is not None:
                        stopped.append((task, problem))
            for task, problem in stopped:
                ended += 1
                parts.leases.end_task(task, f"principal: {problem}", "system:lifecycle")
        return ended

    def _run_task(
        self, subject: Subject, name: str, now: dt.datetime, ttl: dt.timedelta, run: AgentRun
    ) -> Task:
        """An agent run's task: it ends at the earliest of its TTL, its window's end, its
        principal's proof and its own attestation (invariant 3 gains the window)."""
        ends = [now + ttl, run.ends_at, run.principal_expires_at]
        return Task(
            id=new_id("tsk"),
            identity_id=subject.identity.id,
            name=name,
            status=TaskStatus.ACTIVE,
            created_at=now,
            deadline=min(e for e in ends if e is not None),
            attestation_expires_at=subject.evidence.expires_at if subject.evidence else None,
            issuer_id=subject.issuer_id,
            claims=dict(subject.claims),
            run=run,
        )

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
