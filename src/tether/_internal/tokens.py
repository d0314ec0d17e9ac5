"""Tether's token format: `tth_` + 43 base62 chars (256 random bits) + 6 base62 chars of CRC32.

The prefix makes a leaked token easy to find; the checksum lets a scanner (or a
server, before any lookup) tell a real token from a look-alike offline, without false
positives. Tokens are stored only as HMAC-SHA256 under the keyring's token key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

PREFIX = "tth_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
TOKEN_PATTERN = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{_BODY_LEN + _CHECK_LEN}}}")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def new_token() -> str:
    body = _base62(secrets.randbits(256), _BODY_LEN)
    return PREFIX + body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """True when `token` has Tether's shape and its checksum matches. No lookup needed."""
    if not TOKEN_PATTERN.fullmatch(token):
        return False
    body, check = token[len(PREFIX) : -_CHECK_LEN], token[-_CHECK_LEN:]
    return hmac.compare_digest(_checksum(body), check)


def token_hash(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
