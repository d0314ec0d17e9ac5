"""Shamir's secret sharing: the root key's shares rebuild it, and only enough of them do."""

from __future__ import annotations

import itertools
import os

import pytest

from tether.barrier import shamir

COMBOS = [(1, 1), (2, 2), (3, 2), (3, 3), (5, 3), (5, 5), (7, 4), (10, 2), (20, 20), (255, 3)]


def _gf_mul(a: int, b: int) -> int:
    """Multiplication in GF(2^8) with the AES polynomial, written independently of shamir."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return product


@pytest.mark.parametrize(("shares", "threshold"), COMBOS)
def test_split_then_combine_all_shares_returns_the_secret(shares: int, threshold: int) -> None:
    secret = os.urandom(32)
    parts = shamir.split(secret, shares, threshold)
    assert len(parts) == shares
    assert all(len(p) == len(secret) + 1 for p in parts)
    xs = [p[-1] for p in parts]
    assert 0 not in xs
    assert len(set(xs)) == shares
    assert shamir.combine(parts) == secret


@pytest.mark.parametrize(("shares", "threshold"), COMBOS)
def test_the_first_and_last_threshold_shares_reconstruct(shares: int, threshold: int) -> None:
    secret = os.urandom(32)
    parts = shamir.split(secret, shares, threshold)
    assert shamir.combine(parts[:threshold]) == secret
    assert shamir.combine(parts[-threshold:]) == secret
    assert shamir.combine(list(reversed(parts[:threshold]))) == secret


@pytest.mark.parametrize(("shares", "threshold"), [(3, 2), (5, 3), (6, 4), (5, 5)])
def test_every_subset_of_at_least_threshold_shares_reconstructs(
    shares: int, threshold: int
) -> None:
    secret = os.urandom(32)
    parts = shamir.split(secret, shares, threshold)
    for size in range(threshold, shares + 1):
        for subset in itertools.combinations(parts, size):
            assert shamir.combine(list(subset)) == secret


@pytest.mark.parametrize(("shares", "threshold"), [(2, 2), (3, 2), (5, 3), (6, 4), (5, 5)])
def test_fewer_than_threshold_shares_do_not_reconstruct(shares: int, threshold: int) -> None:
    secret = os.urandom(32)
    parts = shamir.split(secret, shares, threshold)
    for size in range(1, threshold):
        for subset in itertools.combinations(parts, size):
            rebuilt = shamir.combine(list(subset))
            assert rebuilt != secret
            assert len(rebuilt) == len(secret)


def test_splitting_twice_gives_different_shares_of_the_same_secret() -> None:
    secret = os.urandom(32)
    first = shamir.split(secret, 5, 3)
    second = shamir.split(secret, 5, 3)
    assert set(first).isdisjoint(second)
    assert shamir.combine(first[:3]) == shamir.combine(second[2:]) == secret


def test_no_share_carries_the_secret_in_the_clear() -> None:
    secret = os.urandom(32)
    for share in shamir.split(secret, 5, 3):
        assert secret not in share
        assert share[:-1] != secret


@pytest.mark.parametrize("length", [1, 2, 16, 32, 64])
def test_secrets_of_any_nonzero_length_round_trip(length: int) -> None:
    secret = os.urandom(length)
    parts = shamir.split(secret, 4, 2)
    assert shamir.combine(parts[1:3]) == secret


def test_combine_reads_shares_built_with_plain_gf256_arithmetic() -> None:
    # The share format (y-values then x) over GF(2^8)/AES polynomial, the one Vault uses:
    # shares built here by hand, from a line f(x) = secret + a*x, must combine.
    secret = os.urandom(32)
    slope = os.urandom(32)
    shares = []
    for x in (7, 200):
        ys = bytes(s ^ _gf_mul(a, x) for s, a in zip(secret, slope, strict=True))
        shares.append(ys + bytes([x]))
    assert shamir.combine(shares) == secret


def test_mixing_shares_of_two_splits_does_not_give_either_secret() -> None:
    first, second = os.urandom(32), os.urandom(32)
    a = shamir.split(first, 5, 3)
    b = shamir.split(second, 5, 3)
    third = next(s for s in b if s[-1] not in (a[0][-1], a[1][-1]))
    mixed = [a[0], a[1], third]
    rebuilt = shamir.combine(mixed)
    assert rebuilt not in (first, second)


# -- bad input --


def test_combine_refuses_no_shares() -> None:
    with pytest.raises(ValueError, match="no shares"):
        shamir.combine([])


@pytest.mark.parametrize("bad", [[b""], [b"\x01"], [b"", b""]])
def test_combine_refuses_empty_shares(bad: list[bytes]) -> None:
    with pytest.raises(ValueError):
        shamir.combine(bad)


def test_combine_refuses_the_same_share_twice() -> None:
    parts = shamir.split(os.urandom(32), 5, 3)
    with pytest.raises(ValueError, match="distinct"):
        shamir.combine([parts[0], parts[1], parts[0]])


def test_combine_refuses_two_shares_with_the_same_x() -> None:
    parts = shamir.split(os.urandom(32), 5, 3)
    other = shamir.split(os.urandom(32), 255, 2)
    same_x = next(s for s in other if s[-1] == parts[0][-1])
    with pytest.raises(ValueError, match="distinct"):
        shamir.combine([parts[0], parts[1], same_x])


def test_combine_refuses_shares_of_different_lengths() -> None:
    short = shamir.split(os.urandom(16), 3, 2)
    long = shamir.split(os.urandom(32), 3, 2)
    with pytest.raises(ValueError, match="length"):
        shamir.combine([short[0], long[1]])


def test_combine_refuses_a_share_with_x_zero() -> None:
    parts = shamir.split(os.urandom(32), 3, 2)
    zero_x = parts[1][:-1] + b"\x00"
    with pytest.raises(ValueError, match="distinct"):
        shamir.combine([parts[0], zero_x])


@pytest.mark.parametrize(
    ("shares", "threshold"),
    [(0, 0), (1, 0), (2, 1), (3, 1), (2, 3), (1, 2), (256, 2), (256, 256), (-1, 2), (3, -2)],
)
def test_split_refuses_invalid_parameters(shares: int, threshold: int) -> None:
    with pytest.raises(ValueError):
        shamir.split(os.urandom(32), shares, threshold)


def test_split_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        shamir.split(b"", 5, 3)
