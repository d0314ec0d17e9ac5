"""The OIDC/JWT attestor: a bearer JWT from a trusted issuer in, verified Evidence out."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from jwt.algorithms import get_default_algorithms

from tether._internal.timeutil import UTC, utcnow
from tether.attest._evidence import PRESETS, Evidence, selectors_for
from tether.attest._fetch import DEFAULT_TIMEOUT
from tether.attest._jose import SUPPORTED_ALGORITHMS, VerificationKey, parse_compact
from tether.attest._jti import JtiStore
from tether.attest._keys import KeySource
from tether.attest.errors import AttestationError, ReplayedToken
from tether.model import Issuer

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tether.attest")

#: Algorithm names we may quote back in a message; anything else is attacker text.
_NAMEABLE_ALGORITHMS = frozenset(get_default_algorithms()) | SUPPORTED_ALGORITHMS


@dataclass(frozen=True, slots=True)
class _Trusted:
    issuer: Issuer
    source: KeySource
    algorithms: frozenset[str]


def _audiences(claims: Mapping[str, Any]) -> frozenset[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return frozenset({aud})
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return frozenset(aud)
    return frozenset()


def _number(claims: Mapping[str, Any], name: str) -> int | float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python and `"exp": true` is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AttestationError(f"{name} is not a NumericDate")
    return value


def _time(value: float, name: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise AttestationError(f"{name} is out of range") from None


@dataclass(frozen=True, slots=True)
class AttestorLimits:
    """How strict and how patient verification is.

    `leeway` is the clock skew allowed on exp/nbf/iat; `max_expires_in` refuses tokens
    whose exp is further ahead than that; `min_refresh_interval` bounds how often an
    unknown kid may refetch an issuer's JWKS; `jwks_max_age` is how long fetched keys
    are used before a (non-blocking) refresh; `http_timeout` bounds every fetch.
    """

    leeway: dt.timedelta = dt.timedelta(seconds=30)
    min_refresh_interval: dt.timedelta = dt.timedelta(seconds=30)
    max_expires_in: dt.timedelta = dt.timedelta(hours=24)
    jwks_max_age: dt.timedelta = dt.timedelta(hours=1)
    http_timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if min(self.leeway, self.min_refresh_interval) < dt.timedelta(0):
            raise ValueError("leeway and min_refresh_interval may not be negative")
        if min(self.max_expires_in, self.jwks_max_age) <= dt.timedelta(0) or self.http_timeout <= 0:
            raise ValueError("max_expires_in, jwks_max_age and http_timeout must be positive")


class Attestor:
    """Verifies attestation JWTs against the estate's trusted issuers.

    Thread-safe. Keys are fetched and parsed once per issuer and reused; the issuer list
    is read once and again only after `invalidate()`. `limits` (AttestorLimits) says
    how much clock skew, token lifetime and key age are accepted.
    """

    def __init__(
        self,
        issuers: Callable[[], Sequence[Issuer]],
        jti_store: JtiStore,
        *,
        http: httpx.Client | None = None,
        limits: AttestorLimits | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        limits = limits or AttestorLimits()
        self._issuers = issuers
        self._jti_store = jti_store
        self._own_http = http is None
        #: Made on first fetch (`_client`): httpx costs a node's start about 0.4 s to
        #: import, and issuers with inline keys never fetch.
        self._http = http
        self._leeway = limits.leeway.total_seconds()
        self._leeway_delta = limits.leeway
        self._min_refresh_interval = limits.min_refresh_interval
        self._clock = clock
        self._max_expires_in = limits.max_expires_in.total_seconds()
        self._jwks_max_age = limits.jwks_max_age
        self._http_timeout = limits.http_timeout
        self._lock = threading.Lock()
        self._registry: Mapping[str, tuple[_Trusted, ...]] | None = None

    # -- issuers --
    def invalidate(self) -> None:
        """The estate's issuers changed: drop every cached issuer, JWKS and discovery."""
        with self._lock:
            self._registry = None

    def close(self) -> None:
        if self._own_http and self._http is not None:
            self._http.close()

    def _client(self) -> httpx.Client:
        client = self._http
        if client is None:
            import httpx

            with self._lock:
                if self._http is None:
                    # follow_redirects=False: redirects are followed by hand, same origin only.
                    self._http = httpx.Client(timeout=self._http_timeout, follow_redirects=False)
                client = self._http
        return client

    def _trusted(self) -> Mapping[str, tuple[_Trusted, ...]]:
        registry = self._registry
        if registry is None:
            with self._lock:
                registry = self._registry
                if registry is None:
                    registry = self._build()
                    self._registry = registry
        return registry

    def _build(self) -> Mapping[str, tuple[_Trusted, ...]]:
        by_url: dict[str, tuple[_Trusted, ...]] = {}
        for issuer in self._issuers():
            if issuer.is_x509:
                continue  # client certificates: tether.attest._x509
            if issuer.preset not in PRESETS:
                log.warning("issuer %s has unknown preset %r; ignored", issuer.id, issuer.preset)
                continue
            source = KeySource(
                issuer,
                self._client,
                timeout=self._http_timeout,
                min_refresh_interval=self._min_refresh_interval,
                max_age=self._jwks_max_age,
                clock=self._clock,
            )
            algorithms = frozenset(issuer.algorithms) & SUPPORTED_ALGORITHMS
            trusted = _Trusted(issuer=issuer, source=source, algorithms=algorithms)
            by_url[issuer.issuer] = (*by_url.get(issuer.issuer, ()), trusted)
        return by_url

    def _select_issuer(self, iss: str, claims: Mapping[str, Any]) -> _Trusted:
        entries = self._trusted().get(iss)
        if not entries:
            raise AttestationError("token issuer is not trusted")
        if len(entries) == 1:
            return entries[0]
        # Several estate issuers may share one IdP (say, GitHub for two audiences); the
        # token's audience says which one it was minted for.
        audiences = _audiences(claims)
        matching = [e for e in entries if audiences & set(e.issuer.audiences)]
        if not matching:
            raise AttestationError("audience not accepted")
        if len(matching) > 1:
            names = ", ".join(sorted(e.issuer.id for e in matching))
            raise AttestationError(f"token matches more than one trusted issuer: {names}")
        return matching[0]

    def _key(self, trusted: _Trusted, kid: str | None, alg: str) -> VerificationKey:
        issuer_id = trusted.issuer.id
        candidates = trusted.source.keys().candidates(kid)
        if candidates is None:
            # Possibly a key the IdP rotated in since we fetched: refetch (rate-limited).
            candidates = trusted.source.refresh().candidates(kid)
            if candidates is None:
                if kid is None:
                    raise AttestationError(f"issuer {issuer_id} publishes no usable keys")
                raise AttestationError(f"unknown key id for issuer {issuer_id}")
        if kid is None and len(candidates) > 1:
            raise AttestationError(
                f"token has no kid and issuer {issuer_id} publishes {len(candidates)} keys"
            )
        usable = [key for key in candidates if alg in key.algorithms]
        if not usable:
            # e.g. ES256 claimed for an RSA key: never try a key with a foreign algorithm.
            raise AttestationError(f"algorithm {alg} does not match the key's type")
        if len(usable) > 1:
            raise AttestationError(f"key id names more than one key of issuer {issuer_id}")
        return usable[0]

    # -- verification --
    def verify(self, token: str) -> Evidence:
        """Verify `token` and return its evidence; raise AttestationError saying why not."""
        compact = parse_compact(token)
        header, claims = compact.header, compact.payload
        # We implement no extensions, and RFC 7515 §4.1.11 says a recipient that does
        # not understand a critical one must refuse the token.
        if "crit" in header:
            raise AttestationError("token has a crit header, which is not supported")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AttestationError("token header has no alg")
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise AttestationError("token has no issuer (iss)")
        trusted = self._select_issuer(iss, claims)
        issuer = trusted.issuer
        if alg not in trusted.algorithms:
            shown = alg if alg in _NAMEABLE_ALGORITHMS else "(unrecognized)"
            raise AttestationError(f"algorithm {shown} not allowed for issuer {issuer.id}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AttestationError("token kid is not a string")
        # jku, x5u, jwk and x5c are never read: keys come only from the estate's issuer.
        key = self._key(trusted, kid, alg)
        if not key.verify(alg, compact.signing_input, compact.signature):
            raise AttestationError("signature invalid")
        return self._evidence(issuer, claims)

    def _evidence(self, issuer: Issuer, claims: Mapping[str, Any]) -> Evidence:
        if claims.get("iss") != issuer.issuer:
            raise AttestationError("issuer mismatch")
        audiences = _audiences(claims)
        if not audiences:
            raise AttestationError("token has no audience (aud)")
        if audiences.isdisjoint(issuer.audiences):
            raise AttestationError("audience not accepted")

        now = self._clock().timestamp()
        exp = _number(claims, "exp")
        if exp is None:
            raise AttestationError("token has no expiry (exp)")
        if exp <= now - self._leeway:
            raise AttestationError("token expired")
        if exp - now > self._max_expires_in:
            raise AttestationError("token expiry is too far in the future")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise AttestationError("token not yet valid (nbf)")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise AttestationError("token issued in the future (iat)")

        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AttestationError("token has no subject (sub)")
        jti = claims.get("jti")
        if jti is not None and (not isinstance(jti, str) or not jti):
            raise AttestationError("token jti is not a non-empty string")
        if issuer.single_use and jti is None:
            raise AttestationError(f"token has no jti, which single-use issuer {issuer.id} needs")
        selectors = selectors_for(issuer.preset, claims)
        expires_at = _time(exp, "exp")
        issued_at = None if iat is None else _time(iat, "iat")

        # Last, so a token refused for any other reason does not use up its jti.
        if (
            issuer.single_use
            and jti is not None
            and not self._jti_store.remember(issuer.issuer, jti, expires_at + self._leeway_delta)
        ):
            raise ReplayedToken(f"token already used: issuer {issuer.id} is single-use")
        return Evidence(
            issuer_id=issuer.id,
            issuer=issuer.issuer,
            subject=subject,
            claims=MappingProxyType(claims),
            selectors=MappingProxyType(selectors),
            issued_at=issued_at,
            expires_at=expires_at,
            jti=jti,
        )
