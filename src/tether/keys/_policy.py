"""Cryptographic policy: when a key must get a new version, whatever the calendar says.

The estate's `crypto_policy:` (all fields optional):

    crypto_policy:
      usage_limit: {aes256-gcm: 1073741824}     # encryptions per version, per key type
      max_age: {restricted: 90d, confidential: 180d, internal: 365d, public: 730d}
      deprecated: [ecdsa-p256]                  # key types no new key should use
      escrow_required: [restricted]             # classifications whose keys need escrow

A key's data classification is its owning identity's (`classification_of`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_duration, parse_duration
from tether.keys._model import Key
from tether.keys._types import KeyType
from tether.keys.errors import InvalidCryptoPolicy
from tether.model import Identity

CLASSIFICATIONS: tuple[str, ...] = ("restricted", "confidential", "internal", "public")
#: A key whose identity declares no classification is treated as this.
DEFAULT_CLASSIFICATION = "internal"

#: AES-GCM and ChaCha20-Poly1305 with random 96-bit nonces: NIST SP 800-38D §8.3 caps a
#: key at 2^32 invocations with random IVs, which keeps the chance of any nonce repeating
#: (which breaks both confidentiality and authenticity under that key) below 2^-32. The
#: default is 2^30, a quarter of that: the chance of a repeat by then is about
#: q^2 / 2^97 = 2^-37, and the margin absorbs what counting in reserved blocks adds
#: (every node may run up to one block past the limit before it sees the rotation).
#: ChaCha20-Poly1305's nonce is also 96 bits, so the same birthday bound applies.
AEAD_DEFAULT_LIMIT = 2**30
#: No setting may go past the bound itself.
AEAD_HARD_LIMIT = 2**32

DEFAULT_MAX_AGE: Mapping[str, dt.timedelta] = {
    "restricted": dt.timedelta(days=90),
    "confidential": dt.timedelta(days=180),
    "internal": dt.timedelta(days=365),
    "public": dt.timedelta(days=730),
}


def classification_of(identity: Identity | None) -> str:
    """The data classification of a key's owning identity: its `data_classification`
    (when the model has the field), else the label `data_classification` or
    `classification`, else DEFAULT_CLASSIFICATION."""
    if identity is None:
        return DEFAULT_CLASSIFICATION
    declared = getattr(identity, "data_classification", None)
    if isinstance(declared, str) and declared:
        return declared
    labels = identity.labels
    value = labels.get("data_classification") or labels.get("classification")
    return value if value in CLASSIFICATIONS else DEFAULT_CLASSIFICATION


def _default_limits() -> dict[KeyType, int]:
    return {t: AEAD_DEFAULT_LIMIT for t in KeyType if t.aead}


@dataclass(frozen=True, slots=True)
class CryptoPolicy:
    #: Encryptions per version, per key type; a type without one has no limit.
    usage_limit: Mapping[KeyType, int] = field(default_factory=_default_limits)
    max_age: Mapping[str, dt.timedelta] = field(default_factory=lambda: dict(DEFAULT_MAX_AGE))
    deprecated: frozenset[KeyType] = frozenset()
    escrow_required: frozenset[str] = frozenset({"restricted"})

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None, path: str = "crypto_policy") -> CryptoPolicy:
        """Parse the estate's `crypto_policy:`; InvalidCryptoPolicy names the bad field."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise InvalidCryptoPolicy(f"{path}: must be a mapping")
        known = {"usage_limit", "max_age", "deprecated", "escrow_required"}
        for name in spec:
            if name not in known:
                raise InvalidCryptoPolicy(
                    f"{path}.{name}: unknown field (expected {', '.join(sorted(known))})"
                )
        limits = _default_limits()
        raw_limits = spec.get("usage_limit", {})
        if not isinstance(raw_limits, Mapping):
            raise InvalidCryptoPolicy(f"{path}.usage_limit: must map key types to counts")
        for name, value in raw_limits.items():
            where = f"{path}.usage_limit.{name}"
            key_type = _key_type(name, where)
            cap = AEAD_HARD_LIMIT if key_type.aead else 2**62
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
                raise InvalidCryptoPolicy(f"{where}: must be an integer from 1 to {cap}")
            limits[key_type] = value
        ages = dict(DEFAULT_MAX_AGE)
        raw_ages = spec.get("max_age", {})
        if not isinstance(raw_ages, Mapping):
            raise InvalidCryptoPolicy(f"{path}.max_age: must map classifications to durations")
        for name, value in raw_ages.items():
            where = f"{path}.max_age.{name}"
            if name not in CLASSIFICATIONS:
                expected = ", ".join(CLASSIFICATIONS)
                raise InvalidCryptoPolicy(
                    f"{where}: unknown classification (expected one of {expected})"
                )
            try:
                ages[name] = parse_duration(str(value))
            except (ValueError, TypeError):
                raise InvalidCryptoPolicy(f"{where}: must be a duration such as 90d") from None
        deprecated = frozenset(
            _key_type(v, f"{path}.deprecated[{i}]")
            for i, v in enumerate(_list(spec.get("deprecated", []), f"{path}.deprecated"))
        )
        required = _list(spec.get("escrow_required", ["restricted"]), f"{path}.escrow_required")
        for index, value in enumerate(required):
            if value not in CLASSIFICATIONS:
                raise InvalidCryptoPolicy(
                    f"{path}.escrow_required[{index}]: unknown classification "
                    f"(expected one of {', '.join(CLASSIFICATIONS)})"
                )
        return cls(limits, ages, deprecated, frozenset(required))

    def to_spec(self) -> dict[str, Any]:
        return {
            "usage_limit": {t.value: n for t, n in sorted(self.usage_limit.items())},
            "max_age": {c: format_duration(a) for c, a in sorted(self.max_age.items())},
            "deprecated": sorted(t.value for t in self.deprecated),
            "escrow_required": sorted(self.escrow_required),
        }

    def limit_for(self, key: Key) -> int | None:
        if key.usage_limit is not None:
            return key.usage_limit
        return self.usage_limit.get(key.type)

    def max_age_for(self, key: Key, classification: str) -> dt.timedelta | None:
        if key.max_age is not None:
            return key.max_age
        return self.max_age.get(classification)

    def due_rotation(
        self, key: Key, now: dt.datetime, *, classification: str, encryptions: int
    ) -> tuple[str, ...]:
        """Why `key` needs a new version now (empty: it does not). `encryptions` is the
        latest version's counter. Reasons: `usage-limit`, `max-age`."""
        reasons = []
        limit = self.limit_for(key)
        if limit is not None and encryptions >= limit:
            reasons.append("usage-limit")
        age = self.max_age_for(key, classification)
        if age is not None and key.latest.created_at + age <= now:
            reasons.append("max-age")
        return tuple(reasons)


def _key_type(value: object, where: str) -> KeyType:
    try:
        return KeyType(str(value))
    except ValueError:
        raise InvalidCryptoPolicy(
            f"{where}: unknown key type (expected one of {', '.join(t.value for t in KeyType)})"
        ) from None


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise InvalidCryptoPolicy(f"{where}: must be a list")
    return list(value)
