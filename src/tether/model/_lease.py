from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    #: Who acts, when the credential was delegated (RFC 8693 `act`).
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
