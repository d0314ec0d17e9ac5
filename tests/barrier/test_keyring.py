"""The keyring: AES-256-GCM by term, records bound to their id, keys never printed."""

from __future__ import annotations

import base64
import os

import pytest

from tether.barrier import DecryptionFailed
from tether.barrier.keyring import Keyring


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def _key_renderings(keyring: Keyring) -> list[str]:
    keys = [*keyring.terms.values(), keyring.audit_key, keyring.token_key]
    out = []
    for key in keys:
        out += [repr(key), key.hex(), base64.b64encode(key).decode(), str(list(key))]
    return out


def test_generate_makes_distinct_256_bit_keys(keyring: Keyring) -> None:
    assert keyring.active_term == 1
    assert set(keyring.terms) == {1}
    keys = [keyring.terms[1], keyring.audit_key, keyring.token_key]
    assert all(len(k) == 32 for k in keys)
    assert len(set(keys)) == 3
    assert Keyring.generate().terms[1] != keyring.terms[1]


@pytest.mark.parametrize("plaintext", [b"", b"x", os.urandom(1000), "pässwörd".encode()])
def test_encrypt_then_decrypt_round_trips(keyring: Keyring, plaintext: bytes) -> None:
    term, blob = keyring.encrypt("secret/one", plaintext)
    assert term == 1
    assert keyring.decrypt("secret/one", blob) == plaintext


def test_ciphertext_does_not_contain_the_plaintext_and_differs_every_time(
    keyring: Keyring,
) -> None:
    plaintext = os.urandom(48)
    _, first = keyring.encrypt("r", plaintext)
    _, second = keyring.encrypt("r", plaintext)
    assert first != second
    assert plaintext not in first
    assert plaintext not in second


def test_a_ciphertext_copied_to_another_record_does_not_decrypt(keyring: Keyring) -> None:
    _, blob = keyring.encrypt("identity/a/secret", os.urandom(32))
    for other in ("identity/b/secret", "identity/a/secre", "identity/a/secret ", ""):
        with pytest.raises(DecryptionFailed):
            keyring.decrypt(other, blob)


def test_every_flipped_byte_is_detected(keyring: Keyring) -> None:
    plaintext = os.urandom(20)
    _, blob = keyring.encrypt("r", plaintext)
    for index in range(len(blob)):
        for mask in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[index] ^= mask
            with pytest.raises(DecryptionFailed):
                keyring.decrypt("r", bytes(tampered))
    assert keyring.decrypt("r", blob) == plaintext


@pytest.mark.parametrize("cut", [0, 1, 5, 17, 32])
def test_a_truncated_ciphertext_is_detected(keyring: Keyring, cut: int) -> None:
    _, blob = keyring.encrypt("r", os.urandom(20))
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("r", blob[:cut])
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("r", blob[:-1])


def test_another_keyring_cannot_decrypt(keyring: Keyring) -> None:
    _, blob = keyring.encrypt("r", os.urandom(20))
    with pytest.raises(DecryptionFailed):
        Keyring.generate().decrypt("r", blob)


def test_rotated_writes_under_the_new_term_and_still_reads_old_terms(keyring: Keyring) -> None:
    old_plain = os.urandom(24)
    _, old_blob = keyring.encrypt("r1", old_plain)

    rotated = keyring.rotated()
    assert rotated.active_term == 2
    assert set(rotated.terms) == {1, 2}
    assert rotated.terms[1] == keyring.terms[1]
    assert rotated.terms[2] != keyring.terms[1]

    new_plain = os.urandom(24)
    term, new_blob = rotated.encrypt("r2", new_plain)
    assert term == 2
    assert rotated.decrypt("r2", new_blob) == new_plain
    assert rotated.decrypt("r1", old_blob) == old_plain

    twice = rotated.rotated()
    assert twice.active_term == 3
    assert twice.decrypt("r1", old_blob) == old_plain
    assert twice.decrypt("r2", new_blob) == new_plain


def test_rotation_keeps_the_audit_and_token_keys(keyring: Keyring) -> None:
    # Token hashes and audit HMACs must stay verifiable across keyring rotation.
    rotated = keyring.rotated()
    assert rotated.audit_key == keyring.audit_key
    assert rotated.token_key == keyring.token_key


def test_rotation_leaves_the_original_keyring_unchanged(keyring: Keyring) -> None:
    rotated = keyring.rotated()
    assert keyring.active_term == 1
    assert set(keyring.terms) == {1}
    _, blob = rotated.encrypt("r", b"data")
    with pytest.raises(DecryptionFailed, match="term 2"):
        keyring.decrypt("r", blob)


def test_a_ciphertext_relabelled_with_another_term_does_not_decrypt(keyring: Keyring) -> None:
    rotated = keyring.rotated()
    _, blob = rotated.encrypt("r", os.urandom(16))
    relabelled = blob[:1] + (1).to_bytes(4, "big") + blob[5:]
    with pytest.raises(DecryptionFailed):
        rotated.decrypt("r", relabelled)


def test_wrap_unwrap_with_the_root_key_restores_the_keyring(keyring: Keyring) -> None:
    rotated = keyring.rotated()
    _, blob = keyring.encrypt("r", b"kept")
    root_key = os.urandom(32)
    wrapped = rotated.wrap(root_key)
    restored = Keyring.unwrap(root_key, wrapped)
    assert restored == rotated
    assert restored.active_term == 2
    assert restored.audit_key == keyring.audit_key
    assert restored.token_key == keyring.token_key
    assert restored.decrypt("r", blob) == b"kept"


def test_wrapped_keyring_holds_no_key_in_the_clear(keyring: Keyring) -> None:
    root_key = os.urandom(32)
    wrapped = keyring.rotated().wrap(root_key)
    text = wrapped.decode("latin-1")
    for key in [*keyring.rotated().terms.values(), keyring.audit_key, keyring.token_key]:
        assert key not in wrapped
        assert base64.b64encode(key).decode() not in text
    assert root_key not in wrapped


def test_unwrap_with_a_wrong_root_key_fails(keyring: Keyring) -> None:
    wrapped = keyring.wrap(os.urandom(32))
    for wrong in (os.urandom(32), os.urandom(16), b"", os.urandom(5)):
        with pytest.raises(DecryptionFailed):
            Keyring.unwrap(wrong, wrapped)


def test_unwrap_of_a_tampered_or_truncated_keyring_fails(keyring: Keyring) -> None:
    root_key = os.urandom(32)
    wrapped = keyring.wrap(root_key)
    for index in (0, 11, 12, len(wrapped) // 2, len(wrapped) - 1):
        tampered = bytearray(wrapped)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionFailed):
            Keyring.unwrap(root_key, bytes(tampered))
    for cut in (0, 5, 12, 27, len(wrapped) - 1):
        with pytest.raises(DecryptionFailed):
            Keyring.unwrap(root_key, wrapped[:cut])


def test_repr_and_str_contain_no_key_material(keyring: Keyring) -> None:
    rotated = keyring.rotated()
    root_key = os.urandom(32)
    for ring in (keyring, rotated, Keyring.unwrap(root_key, rotated.wrap(root_key))):
        ring.encrypt("r", b"populate the cipher cache")
        for text in (repr(ring), str(ring), f"{ring!r}", repr([ring]), repr({"k": ring})):
            for rendering in _key_renderings(ring):
                assert rendering not in text
    assert "active_term=2" in repr(rotated)
