from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SecretUse:
    """Someone still using a version: enough to name them in an alert."""

    caller: str  # e.g. "10.0.0.7 app=billing-batch pid=4242"
    details: Mapping[str, str] = field(default_factory=dict)


class StaticBackend(Protocol):
    """Where a static secret's versions live outside Tether (or nowhere, for vault-only).

    Rotation calls `stage` for the new version, `test` to prove it works, and, once the
    overlap window has passed, `retire` for the old one. `users_of` lets Tether see who
    still uses a version, to raise an alert naming them. Every method is idempotent and
    raises `tether.providers.ProviderError` when the target cannot be reached.
    """

    kind: str

    def stage(self, credential_id: str, version: int, secret: str) -> Mapping[str, str]:
        """Make `secret` usable for `version`; return its public details (e.g. username)."""

    def test(
        self, credential_id: str, version: int, secret: str, details: Mapping[str, str]
    ) -> None:
        """Prove the staged version works (e.g. log in with it)."""

    def retire(self, credential_id: str, version: int, details: Mapping[str, str]) -> None:
        """Make the version unusable and end what it opened."""

    def users_of(
        self, credential_id: str, version: int, details: Mapping[str, str]
    ) -> Sequence[SecretUse]:
        """Who is using the version now; empty when the target cannot tell."""


class VaultOnly:
    """A secret only Tether holds: use is seen when a system asks Tether to verify it."""

    kind = "static"

    def stage(self, credential_id: str, version: int, secret: str) -> Mapping[str, str]:
        return {}

    def test(
        self, credential_id: str, version: int, secret: str, details: Mapping[str, str]
    ) -> None:
        return None

    def retire(self, credential_id: str, version: int, details: Mapping[str, str]) -> None:
        return None

    def users_of(
        self, credential_id: str, version: int, details: Mapping[str, str]
    ) -> Sequence[SecretUse]:
        return ()
