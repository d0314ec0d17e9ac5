"""Agent runs: a task that declares its intent, the principal it acts for and its
execution window. Starting one checks the intent against the agent's schema and the
principal's proof; every later issuance in it is held to all three, and the lifecycle
sweep ends a run whose principal no longer justifies it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from tether._internal.tokens import is_well_formed
from tether.attest import AttestationError, IssuerUnavailable
from tether.estate import EstateView
from tether.issuance._parts import TASK_PROVIDER, IssuanceParts
from tether.issuance._subjects import Subject, Subjects
from tether.issuance.errors import (
    AccessDenied,
    AttestationUnavailable,
    InvalidGrant,
    InvalidRequest,
)
from tether.model import AgentRun, Identity, LeaseState, justification_problems
from tether.store import LeaseFilter, Tx


@dataclass(frozen=True, slots=True)
class RunAsk:
    """What a `POST /v1/tasks` for an agent run declares."""

    purpose: str
    tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    data_classes: tuple[str, ...] = ()
    #: The proof of the principal it acts for: a person's token from a trusted issuer,
    #: or a Tether token of an identity.
    acting_for: str | None = field(default=None, repr=False)
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    max_credentials: int | None = None
    max_audiences: int | None = None


def _outside(kind: str, asked: Sequence[str], allowed: Sequence[str]) -> str | None:
    beyond = [x for x in dict.fromkeys(asked) if x not in allowed]
    if not beyond:
        return None
    return (
        f"intent.{kind}: {', '.join(beyond)} not in the agent's intent schema "
        f"({', '.join(allowed) or 'none'})"
    )


class Runs:
    def __init__(self, parts: IssuanceParts, subjects: Subjects) -> None:
        self._parts = parts
        self._subjects = subjects

    def prepare(self, agent: Subject, ask: RunAsk, now: dt.datetime) -> AgentRun:
        """The run `agent` may start, or a refusal naming the field at fault."""
        identity = agent.identity
        schema = identity.intent_schema
        if schema is None:
            raise InvalidRequest(
                f"identity {identity.id} declares no intent_schema in the estate, so it "
                "cannot declare a run's intent"
            )
        for kind, asked, allowed in (
            ("tools", ask.tools, schema.tools),
            ("resources", ask.resources, schema.resources),
            ("data_classes", ask.data_classes, schema.data_classes),
        ):
            problem = _outside(kind, asked, allowed)
            if problem is not None:
                raise InvalidRequest(problem)
        if not ask.tools:
            raise InvalidRequest("intent.tools: a run declares at least one tool")
        if ask.ends_at is not None and ask.ends_at <= now:
            raise InvalidRequest("window.end: is not in the future")
        if ask.starts_at is not None and ask.ends_at is not None and ask.starts_at >= ask.ends_at:
            raise InvalidRequest("window.start: is not before window.end")
        principal, principal_lease, expires = None, None, None
        if ask.acting_for is not None:
            principal, principal_lease, expires = self._principal(identity, ask.acting_for)
        return AgentRun(
            purpose=ask.purpose,
            tools=tuple(dict.fromkeys(ask.tools)),
            resources=tuple(dict.fromkeys(ask.resources)),
            data_classes=tuple(dict.fromkeys(ask.data_classes)),
            principal=principal,
            principal_lease=principal_lease,
            principal_expires_at=expires,
            starts_at=ask.starts_at,
            ends_at=ask.ends_at,
            max_credentials=ask.max_credentials,
            max_audiences=ask.max_audiences,
        )

    def _principal(self, agent: Identity, token: str) -> tuple[str, str | None, dt.datetime | None]:
        """Whom the token proves, as `person:<id>` or `identity:<id>`; refused unless that
        principal names the agent in its `may_act`."""
        view = self._parts.view.current
        subject = self._subjects.from_lease(token)
        if subject is None and is_well_formed(token):
            raise InvalidGrant("acting_for: is not a valid Tether token")
        if subject is not None:
            principal = f"identity:{subject.identity.id}"
            assert subject.lease is not None
            lease_id, expires = subject.lease.id, subject.lease.expires_at
        else:
            try:
                evidence = self._parts.attestor.verify(token)
            except IssuerUnavailable as exc:
                raise AttestationUnavailable(f"acting_for: not checked: {exc}") from None
            except AttestationError as exc:
                raise InvalidGrant(f"acting_for: refused: {exc}") from None
            person = view.people_by_subject.get((evidence.issuer_id, evidence.subject))
            if person is None:
                raise InvalidGrant(
                    f"acting_for: no person of the estate is {evidence.subject!r} at issuer "
                    f"{evidence.issuer_id}"
                )
            principal, lease_id, expires = f"person:{person.id}", None, evidence.expires_at
        problem = principal_problem(principal, agent, view, self._parts.clock())
        if problem is not None:
            raise AccessDenied(f"acting_for: {problem}")
        return principal, lease_id, expires


def principal_problem(
    principal: str, agent: Identity, view: EstateView, now: dt.datetime
) -> str | None:
    """Why `principal` no longer justifies `agent` acting for it (None: it does): it left,
    is no longer active, or no longer names the agent in `may_act`."""
    kind, _, principal_id = principal.partition(":")
    if kind == "person":
        person = view.people.get(principal_id)
        if person is None:
            return f"person {principal_id} is no longer in the estate"
        if not person.active:
            return f"person {principal_id} has left ({person.status.value})"
        allowed = person.may_act
    else:
        identity = view.identities.get(principal_id)
        if identity is None:
            return f"identity {principal_id} is no longer in the estate"
        problems = justification_problems(
            identity,
            now,
            owners=view.owners,
            vendors=view.vendors,
            departed=view.suspended_owners,
        )
        if problems:
            return f"identity {principal_id}: {problems[0].reason}"
        allowed = identity.may_act
    if agent.id not in allowed:
        named = ", ".join(allowed) or "none"
        return f"{agent.id} may not act for {principal} (its may_act: {named})"
    return None


def run_problem(
    tx: Tx, run: AgentRun, agent: Identity, view: EstateView, now: dt.datetime
) -> str | None:
    """Why an active run must end now (None: it goes on): its principal no longer
    justifies it, or the token that proved an identity principal has ended."""
    if run.principal is None:
        return None
    problem = principal_problem(run.principal, agent, view, now)
    if problem is None and run.principal_lease is not None:
        lease = tx.get_lease(run.principal_lease)
        if lease is None or lease.state is not LeaseState.ACTIVE:
            problem = f"the token that proved {run.principal} has ended"
    return problem


def window_problem(tx: Tx, run: AgentRun, task_id: str, audience: str | None) -> str | None:
    """Inside the issuing transaction: whether one more credential fits the run's window
    (its count and its distinct audiences). The task row is rewritten first by the
    caller, so concurrent issuances in one run are counted one after the other."""
    if run.max_credentials is None and run.max_audiences is None:
        return None
    every = LeaseFilter(task_id=task_id, states=tuple(LeaseState), limit=100_000)
    issued = [lease for lease in tx.find_leases(every) if lease.provider != TASK_PROVIDER]
    if run.max_credentials is not None and len(issued) >= run.max_credentials:
        return f"the run's window allows {run.max_credentials} credential(s), all issued"
    audiences = {lease.audience for lease in issued if lease.audience}
    if (
        run.max_audiences is not None
        and audience is not None
        and audience not in audiences
        and len(audiences) >= run.max_audiences
    ):
        return (
            f"the run's window allows {run.max_audiences} distinct audience(s) "
            f"({', '.join(sorted(audiences))}); {audience} would be one more"
        )
    return None
