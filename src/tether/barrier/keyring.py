"""The keyring: AES-256-GCM data keys by term, plus the audit and token hashing keys.

A record's ciphertext carries the term that wrote it; the associated data binds it to
the record id and term, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.barrier.errors import DecryptionFailed, UnknownTerm

_FORMAT = 1
_HEADER = struct.Struct(">BI")  # format version, term
_NONCE = 12
_KEYRING_AAD = b"tether/keyring/v1"


def _aad(record_id: str, term: int) -> bytes:
    return b"tether/record/v1\x00" + record_id.encode() + b"\x00" + str(term).encode()


@dataclass(frozen=True, slots=True)
class Keyring:
    terms: dict[int, bytes]
    active_term: int
    audit_key: bytes
    token_key: bytes
    _ciphers: dict[int, AESGCM] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:  # keys never reach a log or a traceback
        return f"Keyring(active_term={self.active_term}, terms={sorted(self.terms)})"

    @classmethod
    def generate(cls) -> Keyring:
        return cls(
            terms={1: AESGCM.generate_key(256)},
            active_term=1,
            audit_key=os.urandom(32),
            token_key=os.urandom(32),
        )

    def rotated(self) -> Keyring:
        term = max(self.terms) + 1
        return replace(
            self,
            terms={**self.terms, term: AESGCM.generate_key(256)},
            active_term=term,
            _ciphers={},
        )

    def _cipher(self, term: int) -> AESGCM:
        cipher = self._ciphers.get(term)
        if cipher is None:
            key = self.terms.get(term)
            if key is None:
                raise UnknownTerm(f"no key for keyring term {term}")
            cipher = self._ciphers[term] = AESGCM(key)
        return cipher

    def encrypt(self, record_id: str, plaintext: bytes) -> tuple[int, bytes]:
        term = self.active_term
        nonce = os.urandom(_NONCE)
        body = self._cipher(term).encrypt(nonce, plaintext, _aad(record_id, term))
        return term, _HEADER.pack(_FORMAT, term) + nonce + body

    def decrypt(self, record_id: str, blob: bytes) -> bytes:
        if len(blob) < _HEADER.size + _NONCE + 16:
            raise DecryptionFailed(f"ciphertext of record {record_id!r} is truncated")
        version, term = _HEADER.unpack_from(blob)
        if version != _FORMAT:
            raise DecryptionFailed(f"record {record_id!r} has unknown format {version}")
        nonce = blob[_HEADER.size : _HEADER.size + _NONCE]
        try:
            return self._cipher(term).decrypt(
                nonce, blob[_HEADER.size + _NONCE :], _aad(record_id, term)
            )
        except InvalidTag:
            raise DecryptionFailed(
                f"record {record_id!r} does not authenticate (moved, tampered or wrong key)"
            ) from None

    def wrap(self, root_key: bytes) -> bytes:
        """The keyring encrypted under the root key, for storage."""
        document = {
            "active_term": self.active_term,
            "terms": {str(k): base64.b64encode(v).decode() for k, v in self.terms.items()},
            "audit_key": base64.b64encode(self.audit_key).decode(),
            "token_key": base64.b64encode(self.token_key).decode(),
        }
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(root_key).encrypt(nonce, json.dumps(document).encode(), _KEYRING_AAD)

    @classmethod
    def unwrap(cls, root_key: bytes, blob: bytes) -> Keyring:
        try:
            plain = AESGCM(root_key).decrypt(blob[:_NONCE], blob[_NONCE:], _KEYRING_AAD)
        except (InvalidTag, ValueError):
            raise DecryptionFailed("the root key does not open the keyring") from None
        document = json.loads(plain)
        return cls(
            terms={int(k): base64.b64decode(v) for k, v in document["terms"].items()},
            active_term=int(document["active_term"]),
            audit_key=base64.b64decode(document["audit_key"]),
            token_key=base64.b64decode(document["token_key"]),
        )
