"""Every key type's operations round trip; AEAD ciphertexts bind key, version and AAD;
failures are one uniform error."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.keys.conftest import World
from tether.keys import DecryptionFailed, InvalidKeyRequest, KeyType
from tether.keys._types import decode_token, encode_token

AEADS = ["aes256-gcm", "chacha20-poly1305"]


@pytest.mark.parametrize("key_type", AEADS)
def test_encrypt_decrypt_round_trips_with_and_without_aad(world: World, key_type: str) -> None:
    world.make_key("dek", key_type)
    for plaintext, aad in [(b"card 4111", b""), (b"", b"ctx"), (bytes(range(256)) * 4, b"row:7")]:
        ciphertext = world.keys.encrypt(world.user, "dek", plaintext, aad)
        assert ciphertext.startswith("tether:v1:")
        assert "=" not in ciphertext
        assert world.keys.decrypt(world.user, "dek", ciphertext, aad) == plaintext
    # random 96-bit nonces: the same plaintext twice is two ciphertexts
    assert world.keys.encrypt(world.user, "dek", b"x") != world.keys.encrypt(
        world.user, "dek", b"x"
    )


@pytest.mark.parametrize("key_type", AEADS)
def test_wrong_aad_tampering_relabelling_and_moving_are_one_uniform_error(
    mem_world: World, key_type: str
) -> None:
    w = mem_world
    w.make_key("dek", key_type)
    w.make_key("other", key_type)
    ciphertext = w.keys.encrypt(w.user, "dek", b"secret value", b"aad-1")
    version, payload = decode_token(ciphertext)
    tampered = [
        encode_token(version, payload[:-1] + bytes([payload[-1] ^ 1])),  # tag
        encode_token(version, payload[:12] + bytes([payload[12] ^ 1]) + payload[13:]),  # body
        encode_token(version, bytes([payload[0] ^ 1]) + payload[1:]),  # nonce
        encode_token(version, payload[:20]),  # truncated
        ciphertext + "A",
        "tether:v1:" + "!" * 20,
        "garbage",
    ]
    messages = set()
    for bad in tampered:
        with pytest.raises(DecryptionFailed) as caught:
            w.keys.decrypt(w.user, "dek", bad, b"aad-1")
        messages.add(str(caught.value))
    with pytest.raises(DecryptionFailed) as caught:
        w.keys.decrypt(w.user, "dek", ciphertext, b"aad-2")
    messages.add(str(caught.value))
    with pytest.raises(DecryptionFailed) as caught:
        w.keys.decrypt(w.user, "other", ciphertext, b"aad-1")  # moved to another key
    messages.add(str(caught.value))
    w.keys.rotate(w.admin, "dek")
    with pytest.raises(DecryptionFailed) as caught:  # relabelled to version 2
        w.keys.decrypt(w.user, "dek", encode_token(2, payload), b"aad-1")
    messages.add(str(caught.value))
    assert len(messages) == 1
    (message,) = messages
    assert "secret" not in message and payload.hex() not in message


@pytest.mark.parametrize("marshaling", ["der", "raw"])
@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_sign_verify_round_trips(mem_world: World, key_type: str, marshaling: str) -> None:
    w = mem_world
    w.make_key("signer", key_type)
    if key_type == "ed25519" and marshaling == "raw":
        marshaling = "der"  # ed25519 has one form
    signature = w.keys.sign(w.user, "signer", b"release 1.2.3", marshaling=marshaling)
    assert signature.startswith("tether:v1:")
    assert w.keys.verify(w.user, "signer", b"release 1.2.3", signature, marshaling=marshaling)
    assert not w.keys.verify(w.user, "signer", b"release 1.2.4", signature, marshaling=marshaling)
    assert not w.keys.verify(
        w.user, "signer", b"release 1.2.3", "tether:v1:AAAA", marshaling=marshaling
    )
    if key_type == "ecdsa-p256" and marshaling == "raw":
        assert len(decode_token(signature)[1]) == 64


def test_ecdsa_verifies_outside_tether_with_its_public_key(mem_world: World) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    w = mem_world
    w.make_key("signer", "ecdsa-p256")
    pem = w.keys.get(w.admin, "signer").versions[0].public_key
    assert pem is not None
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = w.keys.sign(w.user, "signer", b"message")
    public.verify(decode_token(signature)[1], b"message", ec.ECDSA(hashes.SHA256()))
    digest = hashlib.sha256(b"message").digest()
    prehashed = w.keys.sign(w.user, "signer", digest, prehashed=True)
    public.verify(decode_token(prehashed)[1], digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert w.keys.verify(w.user, "signer", digest, prehashed, prehashed=True)


def test_hmac_and_its_verification(mem_world: World) -> None:
    import hmac

    w = mem_world
    w.make_key("mac", "hmac-sha256")
    mac = w.keys.hmac(w.user, "mac", b"payload")
    assert mac.startswith("tether:v1:")
    assert len(decode_token(mac)[1]) == 32
    assert w.keys.verify(w.user, "mac", b"payload", mac)
    assert not w.keys.verify(w.user, "mac", b"payload!", mac)
    assert hmac.compare_digest(
        decode_token(w.keys.hmac(w.user, "mac", b"payload"))[1], decode_token(mac)[1]
    )


def test_datakey_plaintext_and_wrapped_or_wrapped_only(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    data_key = w.keys.datakey(w.user, "dek", 256)
    assert data_key.plaintext is not None and len(data_key.plaintext) == 32
    assert w.keys.decrypt(w.user, "dek", data_key.ciphertext) == data_key.plaintext
    wrapped = w.keys.datakey(w.user, "dek", 128, wrapped_only=True)
    assert wrapped.plaintext is None
    assert len(w.keys.decrypt(w.user, "dek", wrapped.ciphertext)) == 16
    with pytest.raises(InvalidKeyRequest):
        w.keys.datakey(w.user, "dek", 100)


def test_a_type_refuses_what_it_does_not_do(mem_world: World) -> None:
    w = mem_world
    w.make_key("signer", "ed25519")
    w.make_key("dek", "aes256-gcm")
    with pytest.raises(InvalidKeyRequest):
        w.keys.encrypt(w.user, "signer", b"x")
    with pytest.raises(InvalidKeyRequest):
        w.keys.sign(w.user, "dek", b"x")
    assert {t.value for t in KeyType} == {
        "aes256-gcm",
        "chacha20-poly1305",
        "ed25519",
        "ecdsa-p256",
        "hmac-sha256",
    }


def test_metadata_never_carries_material(world: World) -> None:
    world.make_key("dek", "aes256-gcm")
    info = world.keys.get(world.admin, "dek").to_dict()
    with world.node.store.read() as tx:
        material = world.node.barrier.get_secret(tx, "key/dek/v1")
        sealed = tx.get_sealed("key/dek/v1")
    assert material is not None and sealed is not None
    assert material not in sealed.ciphertext
    text = repr(info) + repr(world.audit())
    for form in (
        material.hex(),
        base64.b64encode(material).decode(),
        base64.urlsafe_b64encode(material).decode(),
    ):
        assert form not in text
