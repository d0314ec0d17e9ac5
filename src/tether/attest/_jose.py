"""Compact JWS parsed strictly, and JWKs turned into public keys once, not per token.

We parse the token ourselves rather than through `jwt.decode` for three reasons: the
issuer must be chosen from the unverified `iss` before any key is known, every time
check must use an injected clock, and we want exactly one parse per token. Signature
arithmetic is still PyJWT's (and so cryptography's) through its algorithm objects.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError

from tether.attest.errors import AttestationError

#: Far above any real attestation JWT (GitHub's are ~1.5 KiB), far below a parsing DoS.
MAX_TOKEN_LENGTH = 16 * 1024
#: A JWKS larger than this is not an issuer's key set; it is a mistake or an attack.
MAX_JWKS_KEYS = 100
#: RSA keys shorter than this are refused outright (NIST SP 800-131A).
MIN_RSA_BITS = 2048

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHM_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})
#: Asymmetric signature algorithms only. `none` and HS* are absent on purpose: a public
#: key must never double as an HMAC secret, whatever an estate or a token says.
SUPPORTED_ALGORITHMS = RSA_ALGORITHMS | frozenset(_EC_ALGORITHM_BY_CURVE.values()) | {"EdDSA"}
_ALGORITHMS: Mapping[str, Algorithm] = {
    name: algorithm
    for name, algorithm in get_default_algorithms().items()
    if name in SUPPORTED_ALGORITHMS
}
# Only public members are read, so a JWKS that carelessly includes `d` never yields a
# private key object, and an `oct` key (a shared secret) is never a key at all.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class Compact:
    """A compact JWS split and decoded, nothing verified yet."""

    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def _segment(text: str, what: str) -> bytes:
    # Strict base64url without padding: lenient decoders skip stray characters, which
    # would let two different strings carry the same token.
    if not _SEGMENT.fullmatch(text) or len(text) % 4 == 1:
        raise AttestationError(f"malformed token: {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AttestationError(f"malformed token: {what} is not base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # RFC 7515 §5.2 allows either refusing or taking the last; two parsers taking
        # different ones is how signature-wrapping attacks start.
        raise ValueError("duplicate member")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON object: UTF-8, no duplicate members, no NaN/Infinity. Raises ValueError."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, RecursionError):
        raise ValueError("not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def parse_compact(token: str) -> Compact:
    if not isinstance(token, str) or not token:
        raise AttestationError("no token given")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AttestationError("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise AttestationError("malformed token: expected three dot-separated parts")
    header_b64, payload_b64, signature_b64 = parts
    values = []
    for text, what in ((header_b64, "header"), (payload_b64, "payload")):
        try:
            values.append(loads_object(_segment(text, what)))
        except ValueError:
            raise AttestationError(f"malformed token: {what} is not a JSON object") from None
    signature = _segment(signature_b64, "signature")
    if not signature:
        raise AttestationError("token is not signed")
    return Compact(
        header=values[0],
        payload=values[1],
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
    )


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from a JWKS, parsed once, with the algorithms it may verify."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    # A cryptography public key object (RSA, EC or Ed25519/Ed448).
    key: Any = field(repr=False)

    def verify(self, algorithm: str, signing_input: bytes, signature: bytes) -> bool:
        if algorithm not in self.algorithms:
            return False
        return bool(_ALGORITHMS[algorithm].verify(signing_input, self.key, signature))


def _allowed_algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        allowed = RSA_ALGORITHMS
    elif kty == "EC":
        crv = jwk.get("crv")
        alg = _EC_ALGORITHM_BY_CURVE.get(crv) if isinstance(crv, str) else None
        allowed = frozenset() if alg is None else frozenset({alg})
    elif kty == "OKP" and jwk.get("crv") in _OKP_CURVES:
        allowed = frozenset({"EdDSA"})
    else:
        allowed = frozenset()
    declared = jwk.get("alg")
    if declared is not None:
        # A key that names its algorithm is used for that one only (RFC 7517 §4.4).
        allowed = allowed & {declared} if isinstance(declared, str) else frozenset()
    return allowed


def parse_jwk(jwk: Any) -> VerificationKey | None:
    """The key, or None when the entry is not a usable signature-verification key."""
    if not isinstance(jwk, Mapping):
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    algorithms = _allowed_algorithms(jwk)
    if not algorithms:
        return None
    kty = str(jwk["kty"])
    members = _PUBLIC_MEMBERS[kty]
    if not all(isinstance(jwk.get(name), str) for name in members):
        return None
    public = {"kty": kty, **{name: jwk[name] for name in members}}
    try:
        key = _ALGORITHMS[next(iter(algorithms))].from_jwk(public)
    except (InvalidKeyError, ValueError, TypeError):
        # ValueError covers bad base64 and EC points that are not on the curve.
        return None
    if kty == "RSA" and key.key_size < MIN_RSA_BITS:
        return None
    return VerificationKey(kid=kid, kty=kty, algorithms=algorithms, key=key)


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's usable keys at one moment, indexed by kid for the hot path."""

    keys: tuple[VerificationKey, ...]
    fetched_at: dt.datetime
    #: Entries in the document that were not usable keys (wrong type, malformed, `oct`).
    skipped: int = 0
    _by_kid: Mapping[str, tuple[VerificationKey, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, tuple[VerificationKey, ...]] = {}
        for key in self.keys:
            if key.kid is not None:
                index[key.kid] = (*index.get(key.kid, ()), key)
        object.__setattr__(self, "_by_kid", index)

    def candidates(self, kid: str | None) -> tuple[VerificationKey, ...] | None:
        """Keys a token with this kid may be verified with; None means "unknown kid"."""
        if kid is None:
            return self.keys if self.keys else None
        return self._by_kid.get(kid)


def parse_jwks(document: Any, fetched_at: dt.datetime) -> KeySet:
    """Raises ValueError when the document is not a JWKS at all."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS: expected an object with a keys array")
    entries = document["keys"]
    if len(entries) > MAX_JWKS_KEYS:
        raise ValueError(f"JWKS has {len(entries)} keys, more than {MAX_JWKS_KEYS}")
    keys = tuple(key for key in map(parse_jwk, entries) if key is not None)
    return KeySet(keys=keys, fetched_at=fetched_at, skipped=len(entries) - len(keys))
