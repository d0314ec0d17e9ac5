"""The dashboard's session: a cookie that stands for an API token without holding it.

The cookie carries, encrypted and authenticated (AES-256-GCM under a key derived from the
barrier's token key), the token's keyed hash, the session's own expiry and a nonce. Every
request looks the token up again by that hash, so the session has exactly the token's
roles and ends the moment the token is revoked or expires, on every node (they share the
keyring). The browser never sees the token: not in a URL, the page or its storage.

The CSRF token of a session is an HMAC of its nonce: forms carry it, and every POST is
refused without it (compared in constant time).

Each session also has a row in the store (by the SHA-256 of its nonce), so that signing
out ends it everywhere: a copied cookie stops working too, within `LIVE_CACHE_SECONDS`
on other nodes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The cookie's name. With TLS it is `__Host-` prefixed: Secure, Path=/, no Domain.
COOKIE = "tether_session"
SECURE_COOKIE = "__Host-tether_session"
#: A session never outlives this, even for a token that does not expire.
SESSION_MAX = dt.timedelta(hours=8)
_AAD = b"tether/web/session/v1"
#: How long this process trusts that a session is live without reading its row (the API
#: token cache's bound: tether.auth.CACHE_SECONDS).
LIVE_CACHE_SECONDS = 2.0
_NONCE_BYTES = 12


class SessionInvalid(Exception):
    """The cookie is not one this node's keyring made, or it has expired."""


@dataclass(frozen=True, slots=True)
class Session:
    #: The keyed hash of the API token the session stands for.
    token_digest: str
    expires_at: dt.datetime
    #: Random per sign-in: the CSRF token is derived from it.
    nonce: str


class SessionCodec:
    """Seals and opens session cookies; derives and checks their CSRF tokens."""

    def __init__(self, token_key: Callable[[], bytes]) -> None:
        self._token_key = token_key

    def _key(self, purpose: bytes) -> bytes:
        # Derived on each use: the keyring can be rotated or sealed under us.
        return hmac.new(self._token_key(), b"tether/web/" + purpose, hashlib.sha256).digest()

    def new(
        self, token_digest: str, now: dt.datetime, token_expires: dt.datetime | None
    ) -> Session:
        ends = now + SESSION_MAX
        if token_expires is not None:
            ends = min(ends, token_expires)
        return Session(token_digest, ends, secrets.token_urlsafe(16))

    def seal(self, session: Session) -> str:
        payload = json.dumps(
            {
                "h": session.token_digest,
                "e": int(session.expires_at.timestamp()),
                "n": session.nonce,
            },
            separators=(",", ":"),
        ).encode()
        iv = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(self._key(b"session")).encrypt(iv, payload, _AAD)
        return base64.urlsafe_b64encode(iv + sealed).decode().rstrip("=")

    def open(self, cookie: str, now: dt.datetime) -> Session:
        if not cookie or len(cookie) > 1024:
            raise SessionInvalid("no session")
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            payload = AESGCM(self._key(b"session")).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD
            )
            fields = json.loads(payload)
            session = Session(
                str(fields["h"]),
                dt.datetime.fromtimestamp(int(fields["e"]), dt.UTC),
                str(fields["n"]),
            )
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
            raise SessionInvalid("the session cookie is not valid") from None
        if session.expires_at <= now:
            raise SessionInvalid("the session has expired")
        return session

    def csrf(self, session: Session) -> str:
        return hmac.new(self._key(b"csrf"), session.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        # Bytes: compare_digest refuses (TypeError) a str with characters beyond ASCII.
        return given is not None and hmac.compare_digest(
            self.csrf(session).encode(), given.encode()
        )


def session_id(session: Session) -> str:
    """The id a session is stored by: the SHA-256 of its nonce (the nonce is not stored,
    so the table cannot make a CSRF token)."""
    return hashlib.sha256(session.nonce.encode()).hexdigest()


class SessionRecords:
    """The store's rows of signed-in sessions, and which this process saw live lately."""

    def __init__(self, store: Any, clock: Callable[[], dt.datetime]) -> None:
        self._store, self._clock = store, clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, tx: Any, session: Session, token_id: str) -> None:
        tx.put_web_session(session_id(session), token_id, session.expires_at)

    def live(self, session: Session) -> bool:
        key = session_id(session)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
        if seen is not None and now - seen < LIVE_CACHE_SECONDS:
            return True
        with self._store.read() as tx:
            live: bool = tx.web_session_live(key, self._clock())
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            if live:
                self._seen[key] = now
            else:
                self._seen.pop(key, None)
        return live

    def end(self, tx: Any, session: Session) -> bool:
        key = session_id(session)
        with self._lock:
            self._seen.pop(key, None)
        ended: bool = tx.end_web_session(key, self._clock())
        return ended
