from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether._internal.timeutil import Clock, utcnow
from tether._internal.tokens import is_well_formed, new_token, token_hash
from tether.audit import AuditLog
from tether.auth.errors import (
    Forbidden,
    InvalidRole,
    NotAnApiToken,
    TokenNotFound,
    Unauthenticated,
    UnknownToken,
)
from tether.cluster import API_TOKEN_CREATED, API_TOKEN_REVOKED
from tether.model import AuditEvent
from tether.store import ApiTokenRecord, Store, Tx

#: An API token's role, as a pattern the HTTP schema publishes too.
ROLE_PATTERN = (
    r"^(admin|auditor|introspect|usage|exposure|key-admin|key-approver"
    r"|owner:[A-Za-z0-9]([A-Za-z0-9_:@-]|\.[A-Za-z0-9_:@-]){0,127}\.?"
    # An AuthZEN caller: `pdp:<application>` evaluates against that application, bare
    # `pdp` against the estate's only one (tether.authzen).
    r"|pdp(:[A-Za-z0-9]([A-Za-z0-9_:@-]|\.[A-Za-z0-9_:@-]){0,127}\.?)?)$"
)
_ROLE = re.compile(ROLE_PATTERN.removeprefix("^").removesuffix("$"))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as established by their token."""

    token_id: str
    name: str
    roles: tuple[str, ...]
    #: When the token stops working (None: it does not expire); a session ends with it.
    expires_at: dt.datetime | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}({self.name})"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def owned(self) -> tuple[str, ...]:
        return tuple(role.split(":", 1)[1] for role in self.roles if role.startswith("owner:"))

    def owner_scope(self) -> tuple[str, ...] | None:
        """None: may see every owner's identities. Otherwise only these owners'."""
        if self.is_admin or "auditor" in self.roles:
            return None
        return self.owned()

    def write_scope(self) -> tuple[str, ...] | None:
        """None: may change every owner's objects (admin). Otherwise only these owners':
        an auditor role added to an owner token widens what it reads, never what it
        changes."""
        return None if self.is_admin else self.owned()

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this needs the admin role")

    def require_reader(self) -> None:
        if not (self.is_admin or "auditor" in self.roles):
            raise Forbidden("this needs the admin or auditor role")

    def may_see_owner(self, owner_id: str) -> bool:
        scope = self.owner_scope()
        return scope is None or owner_id in scope


def validate_roles(roles: Sequence[str]) -> tuple[str, ...]:
    if not roles:
        raise InvalidRole(
            "roles: at least one role is required"
            " (admin, auditor, introspect, usage, exposure, owner:<id>, pdp[:<application>])"
        )
    for index, role in enumerate(roles):
        # An owner id is a safe id: at most 128 characters, no "..".
        if not isinstance(role, str) or not _ROLE.fullmatch(role) or len(role) > 6 + 128:
            raise InvalidRole(
                f"roles[{index}]: must be admin, auditor, introspect, usage, exposure, owner:<id>"
                " or pdp[:<application>]"
            )
    return tuple(dict.fromkeys(roles))


#: How long a verified API token is trusted without a lookup. Revocation on this node
#: clears the cache at once; another replica notices within this window.
CACHE_SECONDS = 2.0


class Authenticator:
    def __init__(
        self,
        store: Store,
        token_key: Callable[[], bytes],
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._token_key = token_key
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiTokenRecord]] = {}
        self._cache_lock = threading.Lock()

    def forget_cached(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def _cached(self, digest: str, now: float) -> ApiTokenRecord | None:
        with self._cache_lock:
            hit = self._cache.get(digest)
        return hit[1] if hit is not None and now - hit[0] < CACHE_SECONDS else None

    def answers_from_memory(self, token: str | None) -> bool:
        """Whether checking `token` reads no store: it is absent, malformed, or a cached
        API token. Callers on an event loop hand every other token to a thread."""
        if not token or not is_well_formed(token):
            return True
        return self._cached(token_hash(self._token_key(), token), time.monotonic()) is not None

    def _lookup(self, digest: str) -> ApiTokenRecord | None:
        now = time.monotonic()
        if (hit := self._cached(digest, now)) is not None:
            return hit
        with self._store.read() as tx:
            record = tx.api_token_by_hash(digest)
        if record is not None:
            with self._cache_lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now, record)
        return record

    def issue(
        self,
        tx: Tx,
        name: str,
        roles: Sequence[str],
        created_by: str,
        ttl: dt.timedelta | None = None,
    ) -> tuple[str, ApiTokenRecord]:
        """Create an API token. The token is returned once and stored only as a hash."""
        token = new_token()
        now = self._clock()
        record = ApiTokenRecord(
            id="tok_" + secrets.token_hex(8),
            token_hash=token_hash(self._token_key(), token),
            name=name,
            roles=validate_roles(roles),
            created_at=now,
            created_by=created_by,
            expires_at=None if ttl is None else now + ttl,
        )
        tx.put_api_token(record)
        return token, record

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("a token is required: set TETHER_TOKEN or send a bearer token")
        if not is_well_formed(token):
            raise Unauthenticated("the token is malformed or its checksum is wrong")
        return self.authenticate_digest(self.digest(token))

    def digest(self, token: str) -> str:
        """The keyed hash a token is stored and looked up by."""
        return token_hash(self._token_key(), token)

    def authenticate_digest(self, digest: str) -> Principal:
        """The principal of the token with this keyed hash, checked as `authenticate`
        checks it: the dashboard's session holds the hash, never the token."""
        record = self._lookup(digest)
        # The lookup is by keyed hash, so no comparison of the secret itself happens here.
        if record is None:
            raise UnknownToken("the token is not known")
        if record.revoked_at is not None:
            raise Unauthenticated("the token was revoked")
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise Unauthenticated("the token has expired")
        return Principal(
            token_id=record.id, name=record.name, roles=record.roles, expires_at=record.expires_at
        )

    def refusal(self, token: str, refused: Unauthenticated, needed: str) -> Unauthenticated:
        """What to answer a caller whose `token` was `refused` where the route needs
        `needed` (e.g. "an API token with the admin role"): when the token is of another
        kind Tether knows (a task token, an access token, a JWT), say which; otherwise
        the refusal as it was.

        Only a JWT's shape is looked at, and a Tether token is looked up by its keyed hash
        as `authenticate` does: no secret is compared, logged or put in the message."""
        given = None
        if isinstance(refused, UnknownToken):
            given = self._lease_kind(token_hash(self._token_key(), token))
        elif not is_well_formed(token) and _looks_like_jwt(token):
            given = "a JWT (an attestation token or an access token)"
        return refused if given is None else NotAnApiToken(given, needed)

    def _lease_kind(self, digest: str) -> str | None:
        with self._store.read() as tx:
            lease = tx.lease_by_token_hash(digest)
        if lease is None:
            return None
        return "a task token" if lease.provider == TASK_LEASE_PROVIDER else "an access token"


#: The provider of a task token's lease (`tether.issuance` names its task leases so; it
#: imports this package, so the name is kept here and a test holds the two together).
TASK_LEASE_PROVIDER = "task"
#: A JWT longer than this is not looked at (headers are bounded before this anyway).
_MAX_JWT = 16 * 1024
#: A JOSE header is a few fields; anything longer is not looked at (base64url characters).
_MAX_JWT_HEADER = 1024


def _looks_like_jwt(token: str) -> bool:
    """Three base64url parts whose first is a JSON object naming an `alg`: the shape of
    a JWS compact serialization. The signature is not checked: this only names a kind."""
    parts = token.split(".")
    if len(token) > _MAX_JWT or len(parts) != 3 or not all(parts[:2]):
        return False
    if len(parts[0]) > _MAX_JWT_HEADER:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # deep nesting is not a header
        return False
    return isinstance(header, dict) and "alg" in header


class TokenService:
    """API tokens as operators manage them; every change is in the audit trail."""

    def __init__(
        self, store: Store, auth: Authenticator, audit: AuditLog, clock: Clock = utcnow
    ) -> None:
        self._store = store
        self._auth = auth
        self._audit = audit
        self._clock = clock

    def create(
        self, name: str, roles: Sequence[str], actor: str, ttl: dt.timedelta | None = None
    ) -> tuple[str, ApiTokenRecord]:
        """A new API token (returned once, stored only as a hash) and its record."""
        with self._store.transaction() as tx:
            token, record = self._auth.issue(tx, name, roles, actor, ttl)
            event = AuditEvent(
                action="token.create",
                actor=actor,
                details={"token_id": record.id, "name": record.name, "roles": list(record.roles)},
            )
            self._audit.append(tx, [event])
            tx.publish(API_TOKEN_CREATED, {"token_id": record.id})
        return token, record

    def all(self) -> list[ApiTokenRecord]:
        with self._store.read() as tx:
            return tx.list_api_tokens()

    def revoke(self, token_id: str, actor: str) -> None:
        """Revoke an active token; this node forgets it at once, others within seconds."""
        with self._store.transaction() as tx:
            if not self.revoke_in(tx, token_id, actor):
                raise TokenNotFound(f"no active token {token_id!r}")

    def revoke_in(
        self, tx: Tx, token_id: str, actor: str, details: Mapping[str, Any] | None = None
    ) -> bool:
        """Revoke in the caller's transaction (an exposure's); False if it was not active."""
        if not tx.revoke_api_token(token_id, self._clock()):
            return False
        tx.on_commit(self._auth.forget_cached)
        event = AuditEvent(
            action="token.revoke", actor=actor, details={"token_id": token_id, **(details or {})}
        )
        self._audit.append(tx, [event])
        tx.publish(API_TOKEN_REVOKED, {"token_id": token_id})  # every node forgets it
        return True
