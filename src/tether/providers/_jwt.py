from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tether._internal.timeutil import format_time, parse_time, utcnow
from tether.barrier import Barrier
from tether.cluster import SIGNING_KEYS_CHANGED
from tether.model import Identity, Lease, Profile
from tether.providers._base import JWT_TOKEN_TYPE, IssuedCredential
from tether.store import Store, Tx

_KEYS_META = "jwt/signing-keys"
ALGORITHM = "ES256"
#: A header longer than this (base64url) is not one Tether wrote.
_MAX_HEADER = 512
#: Verified tokens remembered (by hash) per process.
_VERIFIED_CAPACITY = 20_000


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    created_at: dt.datetime
    #: After this, the key signs nothing new but stays published until retire_at.
    rotate_at: dt.datetime
    retire_at: dt.datetime
    public_jwk: Mapping[str, Any]
    private: ec.EllipticCurvePrivateKey | None = None


class SigningKeys:
    """ES256 keys that sign Tether's JWTs, rotated on a schedule and published as a JWKS.

    Private keys are stored only through the barrier; public keys stay published until
    every token a key signed has expired.
    """

    def __init__(
        self,
        store: Store,
        barrier: Barrier,
        rotate_every: dt.timedelta = dt.timedelta(days=1),
        max_token_ttl: dt.timedelta = dt.timedelta(days=1),
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._barrier = barrier
        self._rotate_every = rotate_every
        self._max_token_ttl = max_token_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[_Key] = []

    def _load(self, tx: Tx) -> list[_Key]:
        raw = tx.get_meta(_KEYS_META)
        keys = []
        for doc in json.loads(raw) if raw else []:
            keys.append(
                _Key(
                    kid=doc["kid"],
                    created_at=parse_time(doc["created_at"]),
                    rotate_at=parse_time(doc["rotate_at"]),
                    retire_at=parse_time(doc["retire_at"]),
                    public_jwk=doc["public_jwk"],
                )
            )
        return keys

    def _save(self, tx: Tx, keys: list[_Key]) -> None:
        docs = [
            {
                "kid": k.kid,
                "created_at": format_time(k.created_at),
                "rotate_at": format_time(k.rotate_at),
                "retire_at": format_time(k.retire_at),
                "public_jwk": dict(k.public_jwk),
            }
            for k in keys
        ]
        tx.put_meta(_KEYS_META, json.dumps(docs).encode())

    def ensure_current(self) -> None:
        """Create a key if none signs now; drop retired ones. Called at start and by the worker."""
        now = self._clock()
        with self._store.transaction() as tx:
            stored = self._load(tx)
            keys = [k for k in stored if k.retire_at > now]
            if not any(k.rotate_at > now for k in keys):
                private = ec.generate_private_key(ec.SECP256R1())
                kid = "tk_" + secrets.token_hex(8)
                public_jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
                public_jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
                pem = private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                self._barrier.put_secret(tx, f"jwt-signing-key/{kid}", "jwt-signing-key", pem)
                keys.append(
                    _Key(
                        kid=kid,
                        created_at=now,
                        rotate_at=now + self._rotate_every,
                        retire_at=now + self._rotate_every + self._max_token_ttl,
                        public_jwk=public_jwk,
                    )
                )
            self._save(tx, keys)
            if [k.kid for k in keys] != [k.kid for k in stored]:  # other nodes reload
                tx.publish(SIGNING_KEYS_CHANGED, {"kids": [k.kid for k in keys]})
            loaded = []
            for key in keys:
                pem_bytes = self._barrier.get_secret(tx, f"jwt-signing-key/{key.kid}")
                private_key = None
                if pem_bytes is not None:
                    loaded_key = serialization.load_pem_private_key(pem_bytes, password=None)
                    assert isinstance(loaded_key, ec.EllipticCurvePrivateKey)
                    private_key = loaded_key
                loaded.append(
                    _Key(
                        key.kid,
                        key.created_at,
                        key.rotate_at,
                        key.retire_at,
                        key.public_jwk,
                        private_key,
                    )
                )
        with self._lock:
            self._keys = loaded

    def forget(self) -> None:
        """Drop private keys from memory (on seal)."""
        with self._lock:
            self._keys = []

    def signing_key(self) -> _Key:
        now = self._clock()
        with self._lock:
            current = [k for k in self._keys if k.rotate_at > now and k.private is not None]
        if not current:
            self.ensure_current()
            with self._lock:
                current = [k for k in self._keys if k.rotate_at > now and k.private is not None]
        return max(current, key=lambda k: k.created_at)

    def jwks(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            return {"keys": [dict(k.public_jwk) for k in self._keys if k.retire_at > now]}

    def verification_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        with self._lock:
            for key in self._keys:
                if key.kid == kid and key.private is not None:
                    return key.private.public_key()
        return None


def _header(token: str) -> dict[str, Any] | None:
    """The JOSE header alone, decoded without touching the rest: most JWTs presented to
    Tether are attestation from other issuers, told apart by their `kid` at this cost."""
    head, dot, _ = token.partition(".")
    if not dot or len(head) > _MAX_HEADER:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return None
    return header if isinstance(header, dict) else None


class JwtProvider:
    """JWT access tokens for an audience, signed by Tether; `jti` is the lease id."""

    name = "jwt"
    external = False

    def __init__(self, keys: SigningKeys, issuer_url: Callable[[], str]) -> None:
        self._keys = keys
        self._issuer_url = issuer_url
        # Tokens whose signature was verified, by their SHA-256 (never the token itself):
        # a resource server introspects the same token many times in its short life.
        self._verified: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._verified_lock = threading.Lock()

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        key = self._keys.signing_key()
        claims: dict[str, Any] = {
            "iss": self._issuer_url(),
            "sub": identity.id,
            "aud": lease.audience,
            "iat": int(lease.issued_at.timestamp()),
            "nbf": int(lease.issued_at.timestamp()),
            "exp": int(lease.expires_at.timestamp()),
            "jti": lease.id,
            "scope": " ".join(lease.scopes),
            "client_id": identity.id,
            "tether_owner": identity.owner_id,
        }
        if lease.task_id:
            claims["tether_task"] = lease.task_id
        act = lease.act_claim()
        if act is not None:
            claims["act"] = act
        assert key.private is not None
        token = jwt.encode(
            claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"}
        )
        return IssuedCredential(secret=token, token_type=JWT_TOKEN_TYPE)

    def revoke(self, lease: Lease) -> None:
        return None  # resource servers that introspect see the ended lease

    def verified(self, token: str) -> dict[str, Any] | None:
        """The claims of a live token this process has verified before, or None (never
        verified here, expired, or its key retired or forgotten): no signature check,
        so cheap enough for the event loop."""
        header = _header(token)
        if self._public_key(header) is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        with self._verified_lock:
            known = self._verified.get(digest)
        if known is None or known["exp"] <= time.time():
            return None
        return dict(known)

    def _public_key(self, header: dict[str, Any] | None) -> ec.EllipticCurvePublicKey | None:
        """The key that verifies a token with this header; None for another issuer's or a
        key retired or forgotten (sealed), which verifies nothing, cached or not."""
        if header is None or header.get("alg") != ALGORITHM:
            return None
        kid = header.get("kid")
        return self._keys.verification_key(kid) if isinstance(kid, str) else None

    def decode(self, token: str, *, expired_too: bool = False) -> dict[str, Any] | None:
        """Claims of a token Tether signed, or None: used by introspection and revocation.
        `expired_too`: a token past its `exp` still answers (a leaked copy is tied to its
        lease whatever its age)."""
        header = _header(token)
        public = self._public_key(header)
        if header is None or public is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        with self._verified_lock:
            known = self._verified.get(digest)
        if known is not None and (expired_too or known["exp"] > time.time()):
            return dict(known)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                issuer=self._issuer_url(),
                options={
                    "verify_aud": False,
                    "verify_exp": not expired_too,
                    "require": ["exp", "jti", "iss", "sub"],
                },
            )
        except jwt.PyJWTError:
            return None
        if expired_too:
            return claims  # not cached: the cache answers the live path
        with self._verified_lock:
            self._verified[digest] = dict(claims)
            while len(self._verified) > _VERIFIED_CAPACITY:
                self._verified.popitem(last=False)
        return claims
