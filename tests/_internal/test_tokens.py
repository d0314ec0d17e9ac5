"""Tether's token format: prefix, 256 random bits, an offline checksum, a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import os
import string

from tether._internal.tokens import PREFIX, TOKEN_PATTERN, is_well_formed, new_token, token_hash

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
BODY_LEN = 43
CHECK_LEN = 6
TOKEN_LEN = len(PREFIX) + BODY_LEN + CHECK_LEN


def _body_value(token: str) -> int:
    value = 0
    for char in token[len(PREFIX) : len(PREFIX) + BODY_LEN]:
        value = value * 62 + ALPHABET.index(char)
    return value


# -- the token format --


def test_new_token_has_the_prefix_length_and_alphabet() -> None:
    token = new_token()
    assert token.startswith("tth_")
    assert len(token) == TOKEN_LEN
    assert all(c in ALPHABET for c in token[len(PREFIX) :])
    assert TOKEN_PATTERN.fullmatch(token)
    assert is_well_formed(token)


def test_new_tokens_carry_256_random_bits() -> None:
    draws = [new_token() for _ in range(512)]
    assert len(set(draws)) == len(draws)
    assert len({t[len(PREFIX) : len(PREFIX) + BODY_LEN] for t in draws}) == len(draws)
    values = [_body_value(t) for t in draws]
    assert all(v < 2**256 for v in values)
    # Every one of the 256 bits takes both values across the draws: none is fixed.
    for bit in range(256):
        seen = {(v >> bit) & 1 for v in values}
        assert seen == {0, 1}, f"bit {bit} never varies"


def test_every_new_token_is_well_formed() -> None:
    assert all(is_well_formed(new_token()) for _ in range(200))


def test_any_single_character_change_is_detected() -> None:
    token = new_token()
    replacements = [*ALPHABET, "_", "-", " ", "é"]
    for index, original in enumerate(token):
        for char in replacements:
            if char == original:
                continue
            changed = token[:index] + char + token[index + 1 :]
            assert not is_well_formed(changed), (index, char)


def test_look_alikes_are_not_well_formed() -> None:
    token = new_token()
    body = token[len(PREFIX) :]
    wrong_check = next(
        token[:-CHECK_LEN] + c * CHECK_LEN for c in ALPHABET if c * CHECK_LEN != token[-CHECK_LEN:]
    )
    swapped = next(
        token[:i] + token[i + 1] + token[i] + token[i + 2 :]
        for i in range(len(PREFIX), len(token) - 1)
        if token[i] != token[i + 1]
    )
    look_alikes = [
        "",
        PREFIX,
        "TTH_" + body,
        "tth-" + body,
        "ghp_" + body,
        body,
        token[:-1],
        token + "0",
        token[:-CHECK_LEN],
        " " + token,
        token + "\n",
        token.upper(),
        wrong_check,
        swapped,
        PREFIX + body[::-1],
        token.replace(PREFIX, PREFIX + PREFIX, 1),
    ]
    for candidate in look_alikes:
        assert not is_well_formed(candidate), candidate


def test_the_pattern_finds_a_token_in_surrounding_text() -> None:
    token = new_token()
    found = TOKEN_PATTERN.search(f'export TETHER_TOKEN="{token}" # prod')
    assert found is not None
    assert found.group(0) == token


def test_token_hash_is_keyed() -> None:
    token = new_token()
    key, other_key = os.urandom(32), os.urandom(32)
    digest = token_hash(key, token)
    assert digest == token_hash(key, token)
    assert digest != token_hash(other_key, token)
    assert digest != token_hash(key, new_token())
    assert digest == hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256(token.encode()).hexdigest()
    assert len(digest) == 64
    assert token not in digest
