"""Issuance: a workload proves what it is, policy decides, a lease is written, a
credential is minted, and all of it is audited — at request time, fail closed."""

from tether.issuance._service import (
    MAX_TASK_TTL,
    TASK_PROVIDER,
    CredentialResult,
    ExchangeRequest,
    ExchangeResult,
    IssuanceService,
    PolicyHolder,
    StartedTask,
    StoreJtiStore,
    Subject,
)
from tether.issuance.errors import OAuthError

__all__ = [
    "MAX_TASK_TTL",
    "TASK_PROVIDER",
    "CredentialResult",
    "ExchangeRequest",
    "ExchangeResult",
    "IssuanceService",
    "OAuthError",
    "PolicyHolder",
    "StartedTask",
    "StoreJtiStore",
    "Subject",
]
