from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from tether.model import AuditRecord

Spec = dict[str, Any]

#: The kinds of estate object kept in the generic object table (identities have their own).
ESTATE_OBJECT_TYPES = ("owner", "vendor", "issuer", "profile", "kind", "policy")


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """Secret material as the store sees it: ciphertext under a keyring term."""

    id: str
    purpose: str
    term: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """An API token as stored: only its keyed hash, never the token."""

    id: str
    token_hash: str
    name: str
    roles: tuple[str, ...]
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class IdentityFilter:
    kind: str | None = None
    owner_id: str | None = None
    environment: str | None = None
    status: str | None = None
    #: Restrict to these owners (an `owner:<id>` caller sees only its own identities).
    owner_in: tuple[str, ...] | None = None
    after_id: str | None = None
    limit: int = 1000


class Tx(Protocol):
    """One transaction. Nothing is visible to others until the transaction commits."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transaction has committed; never after a rollback."""

    # -- barrier metadata (seal configuration, the sealed keyring) --
    def get_meta(self, key: str) -> bytes | None: ...
    def put_meta(self, key: str, value: bytes) -> None: ...

    # -- secret material, encrypted by the barrier before it gets here --
    def get_sealed(self, record_id: str) -> SealedRecord | None: ...
    def put_sealed(self, record: SealedRecord) -> None: ...
    def sealed_below_term(self, term: int, limit: int) -> list[SealedRecord]: ...

    # -- estate objects other than identities --
    def estate_objects(self, type_: str) -> dict[str, Spec]: ...
    def put_estate_object(self, type_: str, object_id: str, spec: Spec) -> None: ...
    def delete_estate_object(self, type_: str, object_id: str) -> None: ...

    # -- identities --
    def identity_specs(self) -> dict[str, Spec]: ...
    def get_identity(self, identity_id: str) -> Spec | None: ...
    def put_identity(self, spec: Spec) -> None: ...
    def list_identities(self, where: IdentityFilter) -> list[Spec]: ...

    # -- audit log --
    def audit_head(self) -> tuple[int, str]: ...
    def append_audit(self, records: Sequence[AuditRecord]) -> None: ...
    def list_audit(
        self, after_seq: int, limit: int, identity_id: str | None = None
    ) -> list[AuditRecord]: ...

    # -- API tokens --
    def put_api_token(self, record: ApiTokenRecord) -> None: ...
    def api_token_by_hash(self, token_hash: str) -> ApiTokenRecord | None: ...
    def list_api_tokens(self) -> list[ApiTokenRecord]: ...
    def revoke_api_token(self, token_id: str, at: dt.datetime) -> bool: ...


class Store(Protocol):
    def migrate(self) -> None:
        """Bring the schema to the newest version; safe to call on every start."""

    def transaction(self) -> AbstractContextManager[Tx]:
        """A read-write transaction. Writers are serialized; an exception rolls back."""

    def read(self) -> AbstractContextManager[Tx]:
        """A read-only transaction that does not wait for writers."""

    def iter_audit(self, batch: int = 20_000) -> Iterator[AuditRecord]:
        """Every audit entry in sequence order, streamed in batches (memory stays flat)."""

    def close(self) -> None: ...
