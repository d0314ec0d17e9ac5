"""Issuance: a workload proves what it is, policy decides, a lease is written, a
credential is minted, and all of it is audited — at request time, fail closed.

One module per job around `IssuanceRequest`, the request being decided: `_subjects`
(whom a credential stands for), `_tasks` (tasks, join tokens), `_runs` (agent runs:
intent, principal, window), `_profiles` (which
profile), `_exchange` (RFC 8693), `_renewal`, `_credentials` (two-phase target
credentials) and `_introspection` (RFC 7662/7009); `IssuanceService` is the facade.
Refusals are `IssuanceError`s (tether.issuance.errors); transports map them.
"""

from tether.issuance._credentials import CredentialResult
from tether.issuance._decide import INTENT_VIOLATION
from tether.issuance._exchange import ExchangeRequest, ExchangeResult
from tether.issuance._parts import TASK_PROVIDER, IssuanceParts
from tether.issuance._request import IssuanceRequest
from tether.issuance._runs import RunAsk, principal_problem, run_problem
from tether.issuance._service import IssuanceService
from tether.issuance._subjects import Subject
from tether.issuance._tasks import MAX_TASK_TTL, StartedTask
from tether.issuance.errors import (
    AccessDenied,
    AttestationUnavailable,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    IssuanceError,
    NotFound,
    TaskTokenRequired,
    UnauthorizedClient,
    UnknownTarget,
    WindowFull,
)

__all__ = [
    "INTENT_VIOLATION",
    "MAX_TASK_TTL",
    "TASK_PROVIDER",
    "AccessDenied",
    "AttestationUnavailable",
    "CredentialResult",
    "ExchangeRequest",
    "ExchangeResult",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "IssuanceError",
    "IssuanceParts",
    "IssuanceRequest",
    "IssuanceService",
    "NotFound",
    "RunAsk",
    "StartedTask",
    "Subject",
    "TaskTokenRequired",
    "UnauthorizedClient",
    "UnknownTarget",
    "WindowFull",
    "principal_problem",
    "run_problem",
]
