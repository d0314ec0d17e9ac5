from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether.errors import TetherError
from tether.model import Identity, Lease, Profile

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

    secret: str
    token_type: str  # an RFC 8693 token type URI
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
