"""Deciding a request (justification, then policy; fail closed), recording the decision,
and the first step of every issuance: the pending lease and its task."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import NoReturn

from tether._internal.timeutil import format_time
from tether.issuance._parts import IssuanceParts, new_id
from tether.issuance._request import IssuanceRequest
from tether.issuance._runs import run_problem, window_problem
from tether.issuance._subjects import Subject
from tether.issuance.errors import AccessDenied, InvalidGrant, InvalidRequest, WindowFull
from tether.model import ExpiryBound, Identity, Lease, LeaseState, Task, TaskStatus, Usage
from tether.policy import Decision
from tether.store import Tx

#: The guard rail that refuses what an agent run did not declare.
OUTSIDE_INTENT = "guardrail:outside-intent"
#: The usage action that records such an attempt, for governance.
INTENT_VIOLATION = "intent.violation"


def decide(parts: IssuanceParts, request: IssuanceRequest) -> Decision:
    """An ended justification denies before any policy runs: no policy can lift it."""
    problems = request.unjustified()
    if problems:
        return Decision(
            allowed=False,
            policy_ids=tuple(f"guardrail:{p.code}" for p in problems),
            reasons=tuple(p.reason for p in problems),
            errors=(),
            context={},
        )
    stopped = _run_stopped(parts, request)
    if stopped is not None:
        return Decision(
            allowed=False,
            policy_ids=(f"guardrail:{stopped[0]}",),
            reasons=(stopped[1],),
            errors=(),
            context={},
        )
    engine = parts.policy.engine
    if engine is None:
        return Decision(
            allowed=False,
            policy_ids=("tether:no-policy-set",),
            reasons=(parts.policy.error or "no policy set",),
            errors=(),
            context={},
        )
    return engine.evaluate(request.policy_request())


def _run_stopped(parts: IssuanceParts, request: IssuanceRequest) -> tuple[str, str] | None:
    """An agent run issues nothing before its window opens, and nothing once its
    principal no longer justifies it (the sweep ends such a run; this closes the gap)."""
    task = request.task
    run = task.run if task is not None else None
    if run is None or task is None:
        return None
    if run.starts_at is not None and request.now < run.starts_at:
        return "run-window", f"the run's window opens at {format_time(run.starts_at)}"
    agent = request.view.identities.get(task.identity_id)
    if agent is None:
        return "run-principal", f"the run's identity {task.identity_id} is gone"
    with parts.store.read() as tx:
        problem = run_problem(tx, run, agent, request.view, request.now)
    return None if problem is None else ("run-principal", problem)


def deny(
    parts: IssuanceParts, request: IssuanceRequest, decision: Decision, action: str
) -> NoReturn:
    """A denial is evidence too: audited with its policy ids, then refused with the reasons."""
    parts.record([request.audit_event(action, decision)])
    if OUTSIDE_INTENT in decision.policy_ids:
        # Evidence for governance: an agent's run reached for a tool it did not declare.
        # Not a use of that entitlement, so the profile is named as the resource only.
        parts.record_usage(
            Usage(
                identity_id=request.identity.id,
                at=request.now,
                action=INTENT_VIOLATION,
                resource=request.profile.id,
            )
        )
    reasons = "; ".join(decision.reasons) or "denied by policy"
    raise AccessDenied(f"denied: {reasons}")


def write_pending_lease(
    tx: Tx,
    request: IssuanceRequest,
    bound: ExpiryBound,
    *,
    audience: str | None,
    target: str | None = None,
) -> tuple[Lease, IssuanceRequest]:
    """Invariant 1, first step for a credential minted in another system: the lease is
    written, `pending`, before anything is minted there. The request comes back with the
    task it is issued in (an implicit one for bare attestation, written here too)."""
    request, implicit = with_implicit_task(request)
    if implicit is not None:
        tx.put_task(implicit)
    lease = request.new_lease(new_id("lse"), bound, audience=audience, target=target)
    tx.insert_leases([lease])
    return lease, request


def with_implicit_task(request: IssuanceRequest) -> tuple[IssuanceRequest, Task | None]:
    """A credential from bare attestation gets a task of its own: the request in it, and
    the new task to write (None when the request already had one)."""
    if request.task is not None or request.subject.evidence is None:
        return request, None
    task = _implicit_task(request.subject, request.now)
    return replace(request, task=task), task


def still_justified(
    tx: Tx, request: IssuanceRequest, created: Task | None, audience: str | None = None
) -> None:
    """Inside the issuing transaction: the task (unless this transaction `created` it) and
    the credential it derives from are still live. A lease inserted after their end was
    committed would escape its cascade."""
    now = request.now
    task, parent = request.task, request.parent
    if task is not None and task is not created:
        current = tx.get_task(task.id)
        if current is None or current.status is not TaskStatus.ACTIVE:
            raise InvalidGrant(f"task {task.id} has ended")
        run = current.run
        if run is not None and (run.max_credentials is not None or run.max_audiences is not None):
            # Rewriting the row first takes its lock: issuances in one run count in turn.
            tx.put_task(current)
            full = window_problem(tx, run, current.id, audience)
            if full is not None:
                raise WindowFull(full)
    if parent is not None:
        lease = tx.get_lease(parent.id)
        if lease is None or lease.state is not LeaseState.ACTIVE or lease.expires_at <= now:
            raise InvalidGrant("the subject token is no longer active")


def own_task(parts: IssuanceParts, task_id: str, identity: Identity) -> Task:
    """A task the caller names: it must be the identity's own and still running."""
    with parts.store.read() as tx:
        task = tx.get_task(task_id)
    if task is None or task.identity_id != identity.id:
        raise InvalidRequest(f"no task {task_id!r} for {identity.id}")
    if task.status is not TaskStatus.ACTIVE:
        raise InvalidGrant(f"task {task_id} has ended")
    return task


def task_for(parts: IssuanceParts, subject: Subject, task_id: str | None) -> Task | None:
    """The task a request is made in: the subject's, or the one it names."""
    task = subject.task
    if task_id is not None and (task is None or task.id != task_id):
        task = own_task(parts, task_id, subject.identity)
    return task


def _implicit_task(subject: Subject, now: dt.datetime) -> Task:
    """A credential straight from attestation lives in a task that ends with the evidence."""
    evidence = subject.evidence
    assert evidence is not None
    return Task(
        id=new_id("tsk"),
        identity_id=subject.identity.id,
        name=f"implicit:{evidence.jti or evidence.subject}"[:255],
        status=TaskStatus.ACTIVE,
        created_at=now,
        deadline=evidence.expires_at,
        attestation_expires_at=evidence.expires_at,
        issuer_id=subject.issuer_id,
        implicit=True,
        claims=dict(subject.claims),
    )
