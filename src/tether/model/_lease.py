from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_time, parse_time
from tether.model._justification import Placement


class LeaseState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    REVOKING = "revoking"
    REVOKED = "revoked"
    EXPIRED = "expired"

    @property
    def live(self) -> bool:
        return self in (LeaseState.PENDING, LeaseState.ACTIVE)


class TaskStatus(enum.StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _parsed(value: str | None) -> dt.datetime | None:
    return None if value is None else parse_time(value)


@dataclass(frozen=True, slots=True)
class AgentRun:
    """What an agent's task declares: its intent (a purpose, and the tools, resources and
    data classes it means to use, within its identity's intent schema), the principal it
    acts for, and its execution window. Every credential of the run is bounded by it."""

    purpose: str
    #: Profiles the run may be issued credentials of.
    tools: tuple[str, ...] = ()
    #: What those credentials may reach (a profile's audience or target); empty: no
    #: narrower than the tools.
    resources: tuple[str, ...] = ()
    data_classes: tuple[str, ...] = ()
    #: Whom it acts for: `person:<id>` or `identity:<id>`; None: for itself.
    principal: str | None = None
    #: The lease of the token that proved an identity principal (it ends, the run ends).
    principal_lease: str | None = None
    #: When the token that proved the principal expires: the run ends then.
    principal_expires_at: dt.datetime | None = None
    #: The window: nothing is issued before `starts_at` or after `ends_at`.
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    max_credentials: int | None = None
    max_audiences: int | None = None

    @property
    def principal_kind(self) -> str | None:
        return None if self.principal is None else self.principal.split(":", 1)[0]

    @property
    def principal_id(self) -> str | None:
        return None if self.principal is None else self.principal.split(":", 1)[1]

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "purpose": self.purpose,
            "tools": list(self.tools),
            "resources": list(self.resources),
            "data_classes": list(self.data_classes),
            "principal": self.principal,
            "principal_lease": self.principal_lease,
            "principal_expires_at": _time(self.principal_expires_at),
            "starts_at": _time(self.starts_at),
            "ends_at": _time(self.ends_at),
            "max_credentials": self.max_credentials,
            "max_audiences": self.max_audiences,
        }
        return {k: v for k, v in spec.items() if v is not None}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> AgentRun:
        return cls(
            purpose=spec["purpose"],
            tools=tuple(spec.get("tools", ())),
            resources=tuple(spec.get("resources", ())),
            data_classes=tuple(spec.get("data_classes", ())),
            principal=spec.get("principal"),
            principal_lease=spec.get("principal_lease"),
            principal_expires_at=_parsed(spec.get("principal_expires_at")),
            starts_at=_parsed(spec.get("starts_at")),
            ends_at=_parsed(spec.get("ends_at")),
            max_credentials=spec.get("max_credentials"),
            max_audiences=spec.get("max_audiences"),
        )


@dataclass(frozen=True, slots=True)
class Task:
    """An execution window (a pipeline run, a deployment, an agent run)."""

    id: str
    identity_id: str
    name: str
    status: TaskStatus
    created_at: dt.datetime
    deadline: dt.datetime
    #: When the attestation evidence behind the task expires; the task ends then too.
    attestation_expires_at: dt.datetime | None = None
    issuer_id: str | None = None
    #: Identifies a CI run (issuer, repository, run id, attempt): one run, one task.
    run_key: str | None = None
    implicit: bool = False
    ended_at: dt.datetime | None = None
    end_reason: str | None = None
    #: The attestation selectors the task was started with, for later policy decisions.
    claims: Mapping[str, str] = field(default_factory=dict)
    #: An agent run's intent, principal and window; None: a plain task.
    run: AgentRun | None = None

    @property
    def ends_at(self) -> dt.datetime:
        if self.attestation_expires_at is None:
            return self.deadline
        return min(self.deadline, self.attestation_expires_at)


@dataclass(frozen=True, slots=True)
class Lease:
    """The bounded life of one issued credential."""

    id: str
    identity_id: str
    owner_id: str
    provider: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    state: LeaseState
    task_id: str | None = None
    parent_id: str | None = None
    profile_id: str | None = None
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    #: Keyed hash of an opaque credential (task tokens, opaque tokens), for lookup.
    token_hash: str | None = None
    #: Who acts, when the credential was delegated (RFC 8693 `act`): the nearest actor.
    actor: str | None = None
    #: The registered target system holding the credential (databases, caches).
    target: str | None = None
    revoke_attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    end_reason: str | None = None
    #: What the credential was justified for (owner, vendor, environment, region); the
    #: sweep ends it once its identity no longer matches. None: not recorded.
    placement: Placement | None = None
    #: The whole delegation chain, nearest actor first (`actor` is its head): each hop of
    #: RFC 8693 exchange with an actor_token adds one.
    delegation: tuple[str, ...] = ()

    def act_claim(self) -> dict[str, Any] | None:
        """The RFC 8693 `act` claim: the nearest actor, the one before it nested."""
        chain = self.delegation or ((self.actor,) if self.actor else ())
        claim: dict[str, Any] | None = None
        for actor in reversed(chain):
            claim = {"sub": actor} if claim is None else {"sub": actor, "act": claim}
        return claim


@dataclass(frozen=True, slots=True)
class ExpiryBound:
    """One justification's end, so a lease can say what bounded it."""

    name: str
    at: dt.datetime


def bounded_expiry(bounds: Iterable[ExpiryBound | None]) -> ExpiryBound:
    """Invariant 3: a lease ends at the earliest end of everything that justified it."""
    present = [b for b in bounds if b is not None]
    if not present:
        raise ValueError("a lease needs at least one bound")
    return min(present, key=lambda b: b.at)
