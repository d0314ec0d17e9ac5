"""Key types and the cryptography each one does, with `cryptography`'s primitives.

Every key version's material is 32 bytes, whatever the type: the AEAD or HMAC key
itself, an Ed25519 private key's raw seed, or an ECDSA P-256 private scalar (big
endian). One size makes escrow (Shamir over the bytes) and the key check value uniform.

Ciphertexts, signatures and MACs are `tether:v<N>:<base64url, no padding>`: the prefix
says the key version, so a rotated key still opens what older versions wrote.

- aes256-gcm, chacha20-poly1305: payload = nonce (96 random bits) || ciphertext || tag.
  The AEAD's associated data binds the key name and the version (see `associated_data`)
  before the caller's own, so a ciphertext moved to another key, or relabelled to
  another version, does not open.
- ed25519: pure Ed25519 (RFC 8032) over the message.
- ecdsa-p256: ECDSA with SHA-256 over the message (or over a SHA-256 digest the caller
  made, `prehashed`). Signatures are DER (ASN.1 SEQUENCE of r, s: what OpenSSL, Java
  and Go take) unless `marshaling="raw"`: r || s, 32 bytes each (IEEE P1363, as JWS).
- hmac-sha256: HMAC-SHA256 over the message, checked in constant time.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tether.keys.errors import DecryptionFailed, InvalidKeyRequest

MATERIAL_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
PREFIX = "tether:v"
_KCV_LABEL = b"tether key check value"
_AAD_LABEL = b"tether-key-aead/1\x00"


class KeyType(enum.StrEnum):
    AES256_GCM = "aes256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"
    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    HMAC_SHA256 = "hmac-sha256"

    @property
    def aead(self) -> bool:
        return self in (KeyType.AES256_GCM, KeyType.CHACHA20_POLY1305)

    @property
    def signing(self) -> bool:
        return self in (KeyType.ED25519, KeyType.ECDSA_P256)

    @property
    def actions(self) -> frozenset[str]:
        """The use actions (Cedar actions) a key of this type takes."""
        if self.aead:
            return frozenset({"encrypt", "decrypt", "datakey", "rewrap"})
        if self.signing:
            return frozenset({"sign", "verify"})
        return frozenset({"hmac", "verify"})


def parse_key_type(value: object, field: str = "type") -> KeyType:
    try:
        return KeyType(str(value))
    except ValueError:
        choices = ", ".join(t.value for t in KeyType)
        raise InvalidKeyRequest(f"{field}: must be one of {choices}") from None


def generate_material(key_type: KeyType) -> bytes:
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    if key_type is KeyType.ECDSA_P256:
        private = ec.generate_private_key(ec.SECP256R1())
        return private.private_numbers().private_value.to_bytes(MATERIAL_BYTES, "big")
    return os.urandom(MATERIAL_BYTES)


def key_check_value(material: bytes) -> str:
    """First 8 bytes of HMAC-SHA256(material, "tether key check value"), hex: tells
    whether rebuilt material is the key, and reveals nothing of it."""
    return hmac.new(material, _KCV_LABEL, hashlib.sha256).digest()[:8].hex()


def associated_data(name: str, version: int, aad: bytes) -> bytes:
    """What the AEAD authenticates besides the caller's data: a label, the key name
    (length-prefixed, so no name is a prefix of another's encoding) and the version."""
    encoded = name.encode()
    return b"".join(
        (_AAD_LABEL, struct.pack(">H", len(encoded)), encoded, struct.pack(">I", version), aad)
    )


def encode_token(version: int, payload: bytes) -> str:
    return f"{PREFIX}{version}:{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}"


def decode_token(text: object) -> tuple[int, bytes]:
    """(version, payload) of `tether:v<N>:<base64url>`; ValueError if it is not one."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise ValueError("not a tether token")
    number, sep, body = text[len(PREFIX) :].partition(":")
    if not sep or not number.isdigit() or len(number) > 9 or number.startswith("0"):
        raise ValueError("not a tether token")
    if _B64URL.fullmatch(body) is None:
        raise ValueError("not a tether token")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a tether token") from None
    return int(number), payload


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def token_version(text: object) -> int | None:
    """The version a token names, or None if it is not one (without decoding it all)."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        return None
    number = text[len(PREFIX) :].partition(":")[0]
    return int(number) if number.isdigit() and len(number) <= 9 else None


@dataclass(frozen=True, slots=True)
class Loaded:
    """One version's material, opened for use: kept only in this process's memory."""

    key_type: KeyType
    version: int
    primitive: Any

    def public_pem(self) -> str | None:
        if not self.key_type.signing:
            return None
        public = self.primitive.public_key()
        return str(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
        )

    # -- AEAD --
    def encrypt(self, name: str, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.primitive.encrypt(nonce, plaintext, associated_data(name, self.version, aad))
        return encode_token(self.version, nonce + sealed)

    def decrypt(self, name: str, payload: bytes, aad: bytes) -> bytes:
        if len(payload) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed()
        try:
            return bytes(
                self.primitive.decrypt(
                    payload[:NONCE_BYTES],
                    payload[NONCE_BYTES:],
                    associated_data(name, self.version, aad),
                )
            )
        except (InvalidTag, ValueError, OverflowError):
            raise DecryptionFailed() from None

    # -- signatures --
    def sign(self, message: bytes, prehashed: bool, marshaling: str) -> str:
        if self.key_type is KeyType.ED25519:
            if prehashed:
                raise InvalidKeyRequest("prehashed: ed25519 signs the message itself")
            return encode_token(self.version, self.primitive.sign(message))
        algorithm = ec.ECDSA(Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256())
        if prehashed and len(message) != hashlib.sha256().digest_size:
            raise InvalidKeyRequest("input: a prehashed input is a 32-byte SHA-256 digest")
        der = self.primitive.sign(message, algorithm)
        if marshaling == "raw":
            r, s = decode_dss_signature(der)
            return encode_token(self.version, r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return encode_token(self.version, der)

    def verify(self, message: bytes, signature: bytes, prehashed: bool, marshaling: str) -> bool:
        public = self.primitive.public_key()
        try:
            if self.key_type is KeyType.ED25519:
                if prehashed:
                    raise InvalidKeyRequest("prehashed: ed25519 signs the message itself")
                public.verify(signature, message)
                return True
            if marshaling == "raw":
                if len(signature) != 64:
                    return False
                signature = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
            if prehashed and len(message) != hashlib.sha256().digest_size:
                raise InvalidKeyRequest("input: a prehashed input is a 32-byte SHA-256 digest")
            algorithm = ec.ECDSA(Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256())
            public.verify(signature, message, algorithm)
            return True
        except (InvalidSignature, ValueError):
            return False

    # -- HMAC --
    def mac(self, message: bytes) -> bytes:
        return hmac.new(self.primitive, message, hashlib.sha256).digest()


def load(key_type: KeyType, version: int, material: bytes) -> Loaded:
    if len(material) != MATERIAL_BYTES:
        raise ValueError("key material has the wrong length")
    primitive: Any
    if key_type is KeyType.AES256_GCM:
        primitive = AESGCM(material)
    elif key_type is KeyType.CHACHA20_POLY1305:
        primitive = ChaCha20Poly1305(material)
    elif key_type is KeyType.ED25519:
        primitive = ed25519.Ed25519PrivateKey.from_private_bytes(material)
    elif key_type is KeyType.ECDSA_P256:
        primitive = ec.derive_private_key(int.from_bytes(material, "big"), ec.SECP256R1())
    else:
        primitive = bytes(material)
    return Loaded(key_type, version, primitive)


def private_pem(key_type: KeyType, material: bytes) -> bytes:
    """A signing key's material as PKCS#8 PEM (what offline recovery writes for them)."""
    primitive = load(key_type, 1, material).primitive
    return bytes(
        primitive.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
