"""Leases and tasks: the bounded life of every credential, and how it ends.

Leases form a tree (identity → task → lease → derived leases). Revoking any node revokes
its subtree in one transaction, audited per lease. The lifecycle sweep
(`tether.lifecycle`) calls on it to end what expired, what outlived its task, and what
lost its justification; failed external revocations stay `revoking` and are retried
with backoff until confirmed.
"""

from tether.lease._ended import EndedLeases
from tether.lease._service import LeaseService, RevokeTarget, backoff

__all__ = ["EndedLeases", "LeaseService", "RevokeTarget", "backoff"]
