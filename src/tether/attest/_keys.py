"""Per-issuer key cache: inline keys, a configured jwks_uri, or OIDC discovery.

The hot path reads an immutable `KeySet` without taking a lock. Fetches happen under a
per-issuer lock and are rate-limited per issuer: a refresh for an unknown `kid`
happens at most once per `min_refresh_interval`, and so does any other attempt after
one (successful or not), so neither a flood of tokens with random `kid`s nor an IdP
outage turns Tether into a load generator against the IdP. When a refresh fails, the
keys already cached keep working.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.attest._fetch import FetchError, check_url, fetch_json
from tether.attest._jose import KeySet, parse_jwks
from tether.attest.errors import IssuerUnavailable
from tether.model import Issuer

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tether.attest")

DISCOVERY_PATH = "/.well-known/openid-configuration"


class KeySource:
    """Where one issuer's verification keys come from, and the cached result."""

    def __init__(
        self,
        issuer: Issuer,
        http: Callable[[], httpx.Client],
        *,
        timeout: float,
        min_refresh_interval: dt.timedelta,
        max_age: dt.timedelta,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._issuer = issuer
        self._http = http
        self._timeout = timeout
        self._min_refresh_interval = min_refresh_interval
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keyset: KeySet | None = None
        # Any fetch attempt, and the last one made because of an unknown kid. Kept apart
        # so that a kid rotated in just after our first fetch is still picked up at once.
        self._attempted_at: dt.datetime | None = None
        self._kid_refreshed_at: dt.datetime | None = None
        # (jwks_uri, when discovered): discovery is repeated only when stale or after a
        # JWKS fetch failed, so an unknown-kid refresh costs the IdP one request.
        self._discovered: tuple[str, dt.datetime] | None = None
        self.static = issuer.jwks is not None
        if issuer.jwks is not None:
            try:
                self._keyset = parse_jwks(issuer.jwks, clock())
            except ValueError as exc:
                # The estate should have refused it; an issuer with no keys fails closed.
                log.warning("inline JWKS of issuer %s unusable: %s", issuer.id, exc)
                self._keyset = parse_jwks({"keys": []}, clock())

    def keys(self) -> KeySet:
        """The cached keys, fetching them first if there are none (rate-limited)."""
        keyset = self._keyset
        if keyset is None:
            return self._refresh(wait=True, unknown_kid=False)
        if not self.static and self._clock() - keyset.fetched_at >= self._max_age:
            # Stale but usable: one thread refreshes, the others go on with what we have.
            return self._refresh(wait=False, unknown_kid=False)
        return keyset

    def refresh(self) -> KeySet:
        """Fetch again because a token named a kid we do not know (rate-limited)."""
        if self.static:
            return self.keys()
        return self._refresh(wait=True, unknown_kid=True)

    def _refresh(self, *, wait: bool, unknown_kid: bool) -> KeySet:
        if not self._lock.acquire(blocking=wait):
            keyset = self._keyset
            assert keyset is not None  # only non-blocking when a keyset exists
            return keyset
        try:
            now = self._clock()
            # A thread that waited here while another fetched finds the attempt recent
            # and simply uses the fresh result.
            last = self._kid_refreshed_at if unknown_kid else self._attempted_at
            recent = last is not None and now - last < self._min_refresh_interval
            if not recent:
                self._attempted_at = now
                if unknown_kid:
                    self._kid_refreshed_at = now
                try:
                    self._keyset = self._load(now)
                except FetchError as exc:
                    log.warning("fetching keys of issuer %s failed: %s", self._issuer.id, exc)
                    if self._keyset is None:
                        raise IssuerUnavailable(
                            f"keys of issuer {self._issuer.id} are unavailable: {exc}"
                        ) from None
            if self._keyset is None:
                raise IssuerUnavailable(
                    f"keys of issuer {self._issuer.id} are unavailable: "
                    "the last fetch failed; retrying later"
                )
            return self._keyset
        finally:
            self._lock.release()

    def _load(self, now: dt.datetime) -> KeySet:
        jwks_uri = self._issuer.jwks_uri or self._discover(now)
        try:
            document = fetch_json(self._http(), jwks_uri, self._timeout)
            keyset = parse_jwks(document, now)
        except (FetchError, ValueError) as exc:
            self._discovered = None
            raise FetchError(f"JWKS: {exc}") from None
        if keyset.skipped:
            log.info(
                "issuer %s: %d JWKS entries are not usable signature keys",
                self._issuer.id,
                keyset.skipped,
            )
        return keyset

    def _discover(self, now: dt.datetime) -> str:
        if self._discovered is not None and now - self._discovered[1] < self._max_age:
            return self._discovered[0]
        issuer_url = self._issuer.issuer
        # OpenID Connect Discovery 1.0 §4: strip one trailing slash, then append.
        url = issuer_url.removesuffix("/") + DISCOVERY_PATH
        try:
            config = fetch_json(self._http(), url, self._timeout)
        except FetchError as exc:
            raise FetchError(f"discovery: {exc}") from None
        # §4.3: the document must name exactly the issuer we asked about, or it may be
        # another tenant's keys served from a shared host.
        if config.get("issuer") != issuer_url:
            raise FetchError("discovery: the document names a different issuer")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError("discovery: the document has no jwks_uri")
        try:
            scheme = check_url(jwks_uri).scheme
        except FetchError as exc:
            raise FetchError(f"discovery: jwks_uri: {exc}") from None
        if scheme != "https" and issuer_url.startswith("https:"):
            raise FetchError("discovery: an https issuer's jwks_uri must be https")
        self._discovered = (jwks_uri, now)
        return jwks_uri
