"""Shamir's secret sharing over GF(2^8), byte by byte, as Vault does it.

A share is the y-values of one point per secret byte followed by the point's x
coordinate (one byte, never zero). Any `threshold` distinct shares rebuild the secret
by Lagrange interpolation at x = 0; fewer reveal nothing about it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

_EXP = [0] * 512
_LOG = [0] * 256


def _build_tables() -> None:
    value = 1
    for power in range(255):
        _EXP[power] = value
        _LOG[value] = power
        # multiply by the generator 3 in GF(2^8) with the AES polynomial x^8+x^4+x^3+x+1
        value ^= (value << 1) ^ (0x11B if value & 0x80 else 0)
        value &= 0xFF
    for power in range(255, 512):
        _EXP[power] = _EXP[power - 255]


_build_tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(256)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = _mul(result, x) ^ coefficient
    return result


def split(secret: bytes, shares: int, threshold: int) -> list[bytes]:
    if not secret:
        raise ValueError("cannot split an empty secret")
    if not 2 <= threshold <= shares <= 255 and not (threshold == shares == 1):
        raise ValueError(
            "need 1 <= threshold <= shares <= 255, and threshold >= 2 unless shares == 1"
        )
    if shares == 1:
        return [secret + b"\x01"]
    xs = list(range(1, 256))
    secrets.SystemRandom().shuffle(xs)
    xs = xs[:shares]
    out = [bytearray() for _ in range(shares)]
    for byte in secret:
        coefficients = [byte] + [secrets.randbelow(256) for _ in range(threshold - 1)]
        for index, x in enumerate(xs):
            out[index].append(_evaluate(coefficients, x))
    for index, x in enumerate(xs):
        out[index].append(x)
    return [bytes(share) for share in out]


def combine(parts: Sequence[bytes]) -> bytes:
    if not parts:
        raise ValueError("no shares given")
    length = len(parts[0])
    if length < 2 or any(len(p) != length for p in parts):
        raise ValueError("shares differ in length")
    xs = [p[-1] for p in parts]
    if 0 in xs or len(set(xs)) != len(xs):
        raise ValueError("shares must be distinct")
    if len(parts) == 1:
        return bytes(parts[0][:-1])
    secret = bytearray()
    for position in range(length - 1):
        value = 0
        for i, xi in enumerate(xs):
            basis = 1
            for j, xj in enumerate(xs):
                if i != j:
                    basis = _mul(basis, _div(xj, xj ^ xi))
            value ^= _mul(parts[i][position], basis)
        secret.append(value)
    return bytes(secret)
