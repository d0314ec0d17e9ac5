from __future__ import annotations

from collections.abc import Callable

from tether._internal.tokens import new_token, token_hash
from tether.model import Identity, Lease, Profile
from tether.providers._base import ACCESS_TOKEN_TYPE, IssuedCredential


class OpaqueTokenProvider:
    """Opaque Tether tokens (`tth_...`): only a keyed hash is stored; introspection decides."""

    external = False

    def __init__(self, token_key: Callable[[], bytes], name: str = "token") -> None:
        self.name = name
        self._token_key = token_key

    def mint(self) -> IssuedCredential:
        token = new_token()
        return IssuedCredential(
            secret=token,
            token_type=ACCESS_TOKEN_TYPE,
            token_hash=token_hash(self._token_key(), token),
        )

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        return self.mint()

    def revoke(self, lease: Lease) -> None:
        return None  # ending the lease is the revocation: introspection reads it
