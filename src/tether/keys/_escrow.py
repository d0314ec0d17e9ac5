"""Escrow: each version's material split M of N (Shamir, `tether.barrier.shamir`) and
each share sealed to one holder's public key, so that M holders rebuild the key with
their private keys alone: no Tether server, no Tether root key.

Share envelopes are stored *outside* the barrier on purpose (an estate object of type
"key_escrow"): a database backup plus M holders' private keys recover a key even if
Tether's root key is lost. Tether itself cannot open them.

Recipients:

- X25519: `x25519:<base64 of 32 bytes>`, the bare base64, or a PEM public key. A share
  is sealed with an ephemeral X25519 key: HKDF-SHA256 over the shared secret (salt: the
  ephemeral and the recipient public keys; info: ENVELOPE_FORMAT) gives a one-time
  ChaCha20-Poly1305 key; the envelope's header (key, version, holder, threshold, KCV,
  ...) is the associated data, so a share cannot be relabelled.
- RSA (PEM, >= 2048 bits): RSA-OAEP with SHA-256 (MGF1-SHA256), the header's SHA-256 as
  the OAEP label.

`age` recipients (`age1...`) are refused: no age implementation is installed here, and
an age-compatible one would have to be the real thing. Holders can use `age-keygen`'s
X25519 key pair converted to raw bytes, or any X25519 or RSA key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tether.barrier import shamir
from tether.keys._types import MATERIAL_BYTES, KeyType, key_check_value
from tether.keys.errors import EscrowError, RecoveryFailed

ESCROW_TYPE = "key_escrow"
ENVELOPE_FORMAT = "tether-key-share/1"
BUNDLE_FORMAT = "tether-key-share-bundle/1"
X25519_ALG = "x25519-hkdf-sha256-chacha20poly1305"
RSA_ALG = "rsa-oaep-sha256"
_ZERO_NONCE = b"\x00" * 12  # the key is single-use (fresh ephemeral key per envelope)

Recipient = x25519.X25519PublicKey | rsa.RSAPublicKey
PrivateIdentity = x25519.X25519PrivateKey | rsa.RSAPrivateKey


def escrow_id(name: str, version: int) -> str:
    return f"{name}/v{version}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise EscrowError(f"{where}: is not valid base64") from None


def parse_recipient(text: str, where: str = "recipient") -> Recipient:
    text = text.strip()
    if text.startswith("age1"):
        raise EscrowError(
            f"{where}: age recipients are not supported (no age implementation is "
            "installed); give an X25519 public key (x25519:<base64>) or an RSA PEM key"
        )
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError:
            raise EscrowError(f"{where}: is not a PEM public key") from None
        if isinstance(key, x25519.X25519PublicKey):
            return key
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise EscrowError(f"{where}: an RSA recipient needs at least 2048 bits")
            return key
        raise EscrowError(f"{where}: only X25519 and RSA public keys can hold shares")
    raw = _unb64(text.removeprefix("x25519:"), where)
    if len(raw) != 32:
        raise EscrowError(f"{where}: an X25519 public key is 32 bytes")
    return x25519.X25519PublicKey.from_public_bytes(raw)


def recipient_id(key: Recipient) -> str:
    """A stable name of the public key: SHA-256 of its SubjectPublicKeyInfo DER, hex."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _header_bytes(header: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(header), sort_keys=True, separators=(",", ":")).encode()


def _x25519_key(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=ENVELOPE_FORMAT.encode()
    ).derive(shared)


def _seal(share: bytes, recipient: Recipient, header: Mapping[str, Any]) -> dict[str, Any]:
    aad = _header_bytes(header)
    if isinstance(recipient, x25519.X25519PublicKey):
        ephemeral = x25519.X25519PrivateKey.generate()
        epk = ephemeral.public_key().public_bytes_raw()
        key = _x25519_key(ephemeral.exchange(recipient), epk, recipient.public_bytes_raw())
        sealed = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, share, aad)
        return {**header, "epk": _b64(epk), "ciphertext": _b64(sealed)}
    sealed = recipient.encrypt(share, _oaep(aad))
    return {**header, "ciphertext": _b64(sealed)}


def _oaep(aad: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=hashlib.sha256(aad).digest(),
    )


_HEADER_FIELDS = (
    "format",
    "alg",
    "key",
    "key_type",
    "version",
    "holder",
    "recipient",
    "threshold",
    "shares",
    "kcv",
)


def _header(envelope: Mapping[str, Any]) -> dict[str, Any]:
    return {name: envelope[name] for name in _HEADER_FIELDS}


def split_to_holders(
    name: str,
    key_type: KeyType,
    version: int,
    material: bytes,
    threshold: int,
    holders: Sequence[tuple[str, str]],
) -> list[dict[str, Any]]:
    """One sealed envelope per holder ((id, recipient text) pairs), in holder order."""
    if not 2 <= threshold <= len(holders):
        raise EscrowError("escrow.threshold: must be from 2 to the number of holders")
    parts = shamir.split(material, len(holders), threshold)
    kcv = key_check_value(material)
    envelopes = []
    for (holder_id, recipient_text), share in zip(holders, parts, strict=True):
        recipient = parse_recipient(recipient_text, f"escrow.holders[{holder_id}]")
        header = {
            "format": ENVELOPE_FORMAT,
            "alg": X25519_ALG if isinstance(recipient, x25519.X25519PublicKey) else RSA_ALG,
            "key": name,
            "key_type": key_type.value,
            "version": version,
            "holder": holder_id,
            "recipient": recipient_id(recipient),
            "threshold": threshold,
            "shares": len(holders),
            "kcv": kcv,
        }
        envelopes.append(_seal(share, recipient, header))
    return envelopes


def check_envelope(
    envelope: Mapping[str, Any], *, name: str, version: int, kcv: str, threshold: int
) -> list[str]:
    """What is wrong with a stored envelope (empty: well-formed and about this version)."""
    problems = []
    try:
        header = _header(envelope)
    except (KeyError, TypeError):
        return ["the envelope lacks header fields"]
    if header["format"] != ENVELOPE_FORMAT:
        problems.append("unknown envelope format")
    if header["key"] != name or header["version"] != version:
        problems.append("the envelope names another key or version")
    if header["kcv"] != kcv:
        problems.append("the envelope's key check value is not this version's")
    if header["threshold"] != threshold:
        problems.append("the envelope's threshold differs from the key's")
    try:
        sealed = base64.b64decode(str(envelope.get("ciphertext", "")), validate=True)
        if header["alg"] == X25519_ALG:
            epk = base64.b64decode(str(envelope.get("epk", "")), validate=True)
            if len(epk) != 32 or len(sealed) != MATERIAL_BYTES + 1 + 16:
                problems.append("the sealed share has the wrong size")
        elif header["alg"] == RSA_ALG:
            if len(sealed) < 256:
                problems.append("the sealed share has the wrong size")
        else:
            problems.append("unknown sealing algorithm")
    except (binascii.Error, ValueError):
        problems.append("the sealed share is not valid base64")
    return problems


def make_bundle(holder: str, envelopes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a holder receives: every envelope sealed to them, of every escrowed version."""
    return {
        "format": BUNDLE_FORMAT,
        "holder": holder,
        "shares": [dict(e) for e in envelopes if e.get("holder") == holder],
    }


# -- offline: private identities, opening shares, rebuilding --


def load_identity(data: bytes, where: str = "identity") -> PrivateIdentity:
    """A holder's private key: PEM (PKCS#8 X25519 or RSA; unencrypted), or the raw 32
    bytes of an X25519 private key as base64 (`x25519-private:<base64>` or bare)."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError):
            raise RecoveryFailed(f"{where}: is not an unencrypted PEM private key") from None
        if isinstance(key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
            return key
        raise RecoveryFailed(f"{where}: only X25519 and RSA private keys open shares")
    try:
        raw = base64.b64decode(text.removeprefix(b"x25519-private:"), validate=True)
    except (binascii.Error, ValueError):
        raise RecoveryFailed(f"{where}: is neither PEM nor a base64 X25519 private key") from None
    if len(raw) != 32:
        raise RecoveryFailed(f"{where}: an X25519 private key is 32 bytes")
    return x25519.X25519PrivateKey.from_private_bytes(raw)


def open_envelope(envelope: Mapping[str, Any], identity: PrivateIdentity) -> bytes | None:
    """The share, if `identity` is the envelope's recipient and it authenticates."""
    try:
        header = _header(envelope)
    except (KeyError, TypeError):
        return None
    if header["recipient"] != recipient_id(identity.public_key()):
        return None
    aad = _header_bytes(header)
    try:
        sealed = base64.b64decode(str(envelope["ciphertext"]), validate=True)
        if isinstance(identity, x25519.X25519PrivateKey):
            if header["alg"] != X25519_ALG:
                return None
            epk = base64.b64decode(str(envelope["epk"]), validate=True)
            own = identity.public_key().public_bytes_raw()
            shared = identity.exchange(x25519.X25519PublicKey.from_public_bytes(epk))
            return bytes(
                ChaCha20Poly1305(_x25519_key(shared, epk, own)).decrypt(_ZERO_NONCE, sealed, aad)
            )
        if header["alg"] != RSA_ALG:
            return None
        return bytes(identity.decrypt(sealed, _oaep(aad)))
    except (InvalidTag, ValueError, KeyError, binascii.Error):
        return None


@dataclass(frozen=True, slots=True)
class Recovered:
    key: str
    key_type: KeyType
    version: int
    kcv: str
    material: bytes


def combine_shares(
    key: str, version: int, kcv: str, threshold: int, shares: Sequence[bytes], key_type: KeyType
) -> Recovered:
    """Rebuild from opened shares; RecoveryFailed with fewer than `threshold` or when the
    result's key check value is not `kcv` (a wrong or tampered share)."""
    distinct = list({s[-1]: s for s in shares if len(s) == MATERIAL_BYTES + 1}.values())
    if len(distinct) < threshold:
        raise RecoveryFailed(
            f"{key} v{version}: {len(distinct)} share(s) opened; recovery takes {threshold}"
        )
    try:
        material = shamir.combine(distinct[:threshold])
    except ValueError:
        raise RecoveryFailed(f"{key} v{version}: the shares do not fit together") from None
    if key_check_value(material) != kcv:
        raise RecoveryFailed(
            f"{key} v{version}: the rebuilt key does not match its key check value"
        )
    return Recovered(key, key_type, version, kcv, material)


def recover(
    bundles: Sequence[Mapping[str, Any]],
    identities: Sequence[PrivateIdentity],
    version: int | None = None,
) -> Recovered:
    """Rebuild one version (the newest present when `version` is None) from holders'
    bundles (or single envelopes) and their private keys. Needs no server."""
    envelopes: list[Mapping[str, Any]] = []
    for bundle in bundles:
        if bundle.get("format") == BUNDLE_FORMAT:
            envelopes.extend(bundle.get("shares", ()))
        elif bundle.get("format") == ENVELOPE_FORMAT:
            envelopes.append(bundle)
        else:
            raise RecoveryFailed("a share file is neither a share bundle nor a share envelope")
    if not envelopes:
        raise RecoveryFailed("the share files hold no shares")
    names = {e.get("key") for e in envelopes}
    if len(names) != 1:
        raise RecoveryFailed("the share files are of different keys: recover one key at a time")
    wanted = version if version is not None else max(int(e.get("version", 0)) for e in envelopes)
    chosen = [e for e in envelopes if e.get("version") == wanted]
    if not chosen:
        raise RecoveryFailed(f"no share of version {wanted} was given")
    first = chosen[0]
    kcvs = {e.get("kcv") for e in chosen}
    if len(kcvs) != 1:
        raise RecoveryFailed("the shares disagree on the key check value")
    opened = []
    for envelope in chosen:
        for identity in identities:
            share = open_envelope(envelope, identity)
            if share is not None:
                opened.append(share)
                break
    return combine_shares(
        str(first["key"]),
        int(wanted),
        str(first["kcv"]),
        int(first["threshold"]),
        opened,
        KeyType(first["key_type"]),
    )


def verify_shares(
    key: str, version: int, kcv: str, threshold: int, shares: Sequence[bytes]
) -> bool:
    """Whether opened shares rebuild the version (compared by key check value; the
    rebuilt material is dropped at once)."""
    try:
        combine_shares(key, version, kcv, threshold, shares, KeyType.AES256_GCM)
    except RecoveryFailed:
        return False
    return True
