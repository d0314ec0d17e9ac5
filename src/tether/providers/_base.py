from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tether.errors import TetherError
from tether.model import Identity, Lease, Profile

if TYPE_CHECKING:
    # Types only: the targets package builds on this one (its providers implement
    # ExternalProvider), so importing it here at run time would be a cycle.
    from tether.targets import Target

# RFC 8693 token type URIs (identifiers, not secrets).
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105


class ProviderError(TetherError):
    """The target system refused or could not be reached; the operation is retried."""

    status_code = 503
    code = "provider_error"


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What the caller receives. `secret` is shown once and never stored in the clear."""

    secret: str = field(repr=False)
    token_type: str = ""  # an RFC 8693 token type URI
    #: Lease fields the provider decided (e.g. the keyed hash of an opaque token).
    token_hash: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    #: True when revocation touches an outside system and may fail (then it is retried);
    #: local providers revoke by ending the lease alone.
    external: bool

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        """Mint the credential the lease stands for."""

    def revoke(self, lease: Lease) -> None:
        """Make the credential unusable at its target; raise ProviderError to retry later."""


#: Every object Tether creates in a target system carries this prefix and the lease id,
#: so the reconciler can tell its own objects from everyone else's.
OBJECT_PREFIX = "tether_"


class ExternalProvider(Provider, Protocol):
    """A provider whose credentials live in another system (a database, a cache).

    Issuance is two-phase: the lease is committed as `pending` first, then `issue` runs;
    a crash in between leaves a pending lease and perhaps an object, both of which the
    reconciler settles. Every method is idempotent, and raises ProviderError when the
    target cannot be reached, so the caller retries later.
    """

    target: Target

    def object_name(self, lease: Lease) -> str:
        """The name of the lease's object in the target (role, ACL user)."""

    def renew(self, lease: Lease) -> None:
        """Move the object's own expiry to `lease.expires_at` (e.g. VALID UNTIL)."""

    def reconcile(self, live_lease_ids: Callable[[Sequence[str]], set[str]]) -> list[str]:
        """Drop prefixed objects whose lease is not live; return the names dropped.
        `live_lease_ids(ids)` answers which of the given lease ids are pending or active."""

    def rotate_root(self) -> Target:
        """Replace the admin credential Tether uses with a random one nobody knows;
        return the target with its new DSN (the caller stores it through the barrier)."""

    def health(self) -> Mapping[str, Any]:
        """{"ok": bool, ...}: can Tether reach and administer the target?"""
