"""Leases and tasks: the bounded life of every credential, and how it ends.

Leases form a tree (identity → task → lease → derived leases). Revoking any node revokes
its subtree in one transaction, audited per lease. A worker ends what expired, what
outlived its task, and what lost its justification; failed external revocations stay
`revoking` and are retried with backoff until confirmed.
"""

from tether.lease._service import LeaseService, LifecycleWorker, RevokeTarget, backoff
from tether.lease.errors import LeaseError, LeaseNotFound, TaskNotFound

__all__ = [
    "LeaseError",
    "LeaseNotFound",
    "LeaseService",
    "LifecycleWorker",
    "RevokeTarget",
    "TaskNotFound",
    "backoff",
]
