"""What issuance works with: the ports and services the composition root hands it."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tether._internal.timeutil import utcnow
from tether.attest import Attestor, X509Attestor
from tether.audit import AuditLog
from tether.estate import EstateViewHolder
from tether.issuance.errors import UnknownTarget
from tether.lease import EndedLeases, LeaseService
from tether.model import AuditEvent, Usage
from tether.policy import PolicyHolder
from tether.providers import ExternalProvider, JwtProvider, OpaqueTokenProvider, Provider
from tether.store import Store, Tx

#: The provider name of task tokens (the lease a task token stands for).
TASK_PROVIDER = "task"


def _unrecorded(_usage: Usage) -> None:
    return None


def _no_targets(name: str) -> ExternalProvider:
    raise UnknownTarget(f"no target {name!r} is registered")


@dataclass(frozen=True, slots=True)
class IssuanceParts:
    """Everything issuance needs, wired once by the composition root."""

    store: Store
    audit: AuditLog
    view: EstateViewHolder
    attestor: Attestor
    policy: PolicyHolder
    #: By provider name: the token providers, the task-token minter among them.
    providers: Mapping[str, Provider]
    jwt_provider: JwtProvider
    task_tokens: OpaqueTokenProvider
    leases: LeaseService
    token_key: Callable[[], bytes]
    issuer_url: Callable[[], str]
    #: The credential provider of a registered target system, by target name.
    target_provider: Callable[[str], ExternalProvider] = _no_targets
    clock: Callable[[], dt.datetime] = field(default=utcnow)
    #: Live leases this process remembers; by default it remembers none it may trust.
    known_leases: EndedLeases = field(default_factory=EndedLeases)
    #: Usage evidence (tether.govern's recorder): every issuance, renewal and
    #: introspection of a live credential is a use of its identity.
    record_usage: Callable[[Usage], None] = _unrecorded
    #: Client certificates presented over mTLS (x509 issuers); None: none are trusted.
    x509_attestor: X509Attestor | None = None

    def record(self, events: list[AuditEvent], tx: Tx | None = None) -> None:
        """Append audit entries in `tx`, or in a transaction of their own."""
        if tx is not None:
            self.audit.append(tx, events)
            return
        with self.store.transaction() as own:
            self.audit.append(own, events)


def new_id(prefix: str) -> str:
    """`prefix_` + the second it was made (8 hex digits) + 80 random bits. Ids made
    together sort together, so inserting one lands on the last page of each index on it
    rather than on a random page: a group commit of N issuances writes a few pages, not N
    per index (SQLite's WAL and PostgreSQL's B-trees alike)."""
    return f"{prefix}_{int(time.time()):08x}{secrets.token_hex(10)}"
