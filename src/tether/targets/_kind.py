from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.targets._target import Target

if TYPE_CHECKING:
    from tether.providers import ExternalProvider
    from tether.static import StaticBackend, StaticCredential


@dataclass(frozen=True, slots=True)
class TargetKind:
    """Everything Tether needs to know about one kind of target system.

    A kind is named once, here: profiles name it as their `provider`, `tether target add
    --kind` and the API take it, leases record it as their provider. The factories import
    their implementation when first called, so reading the registry (the CLI does, for its
    choices) does not load every kind's client library.
    """

    #: As written in profiles (`provider:`), in `tether target add --kind` and on leases.
    name: str
    #: What a target's DSN may start with, e.g. ("postgresql://", "postgres://").
    dsn_schemes: tuple[str, ...]
    #: The dynamic provider for one registered target (an ExternalProvider).
    provider: Callable[[Target], ExternalProvider]
    #: Reads a profile's `grants` the way issuance will; raises InvalidGrants naming the
    #: field. Returns the kind's own reading, which callers outside the kind do not inspect.
    parse_grants: Callable[[Any], object]
    #: Whether a lease's expiry can be moved at the target (renewal in place).
    renewable: bool = True
    #: The kind of static credential this target serves, e.g. "postgres-static", if any...
    static_kind: str | None = None
    #: ...and its backend, given the target and the credential (its users, group).
    static_backend: Callable[[Target, StaticCredential], StaticBackend] | None = None

    def accepts_dsn(self, dsn: str) -> bool:
        return dsn.startswith(self.dsn_schemes)
