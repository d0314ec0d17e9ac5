from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tether._internal.timeutil import utcnow
from tether._internal.tokens import is_well_formed, new_token, token_hash
from tether.auth.errors import Forbidden, InvalidRole, Unauthenticated
from tether.store import ApiTokenRecord, Store, Tx

#: An API token's role, as a pattern the HTTP schema publishes too.
ROLE_PATTERN = (
    r"^(admin|auditor|introspect|owner:[A-Za-z0-9]([A-Za-z0-9_:@-]|\.[A-Za-z0-9_:@-]){0,127}\.?)$"
)
_ROLE = re.compile(ROLE_PATTERN.removeprefix("^").removesuffix("$"))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as established by their token."""

    token_id: str
    name: str
    roles: tuple[str, ...]

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
            "roles: at least one role is required (admin, auditor, introspect, owner:<id>)"
        )
    for index, role in enumerate(roles):
        # An owner id is a safe id: at most 128 characters, no "..".
        if not isinstance(role, str) or not _ROLE.fullmatch(role) or len(role) > 6 + 128:
            raise InvalidRole(f"roles[{index}]: must be admin, auditor, introspect or owner:<id>")
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

    def _lookup(self, digest: str) -> ApiTokenRecord | None:
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
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
        digest = token_hash(self._token_key(), token)
        record = self._lookup(digest)
        # The lookup is by keyed hash, so no comparison of the secret itself happens here.
        if record is None:
            raise Unauthenticated("the token is not known")
        if record.revoked_at is not None:
            raise Unauthenticated("the token was revoked")
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise Unauthenticated("the token has expired")
        return Principal(token_id=record.id, name=record.name, roles=record.roles)
