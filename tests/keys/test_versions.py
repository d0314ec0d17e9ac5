"""Versions: rotation, the minimum versions, rewrap, trimming, batches."""

from __future__ import annotations

import json

import pytest

from tests.keys.conftest import World
from tether.keys import (
    ApprovalState,
    InvalidKeyRequest,
    Operation,
    VersionNotAllowed,
)


def test_version_1_decrypts_after_rotation_and_is_refused_after_min_decryption_2(
    world: World,
) -> None:
    world.make_key("dek", "aes256-gcm")
    old = world.keys.encrypt(world.user, "dek", b"order 17", b"orders")
    info = world.keys.rotate(world.admin, "dek", "scheduled")
    assert info.key.latest_version == 2
    new = world.keys.encrypt(world.user, "dek", b"order 18", b"orders")
    assert new.startswith("tether:v2:")
    assert world.keys.decrypt(world.user, "dek", old, b"orders") == b"order 17"
    result = world.keys.configure(world.admin, "dek", {"min_decryption_version": 2})
    assert result.approvals == ()  # raising the minimum takes effect at once
    with pytest.raises(VersionNotAllowed):
        world.keys.decrypt(world.user, "dek", old, b"orders")
    assert world.keys.decrypt(world.user, "dek", new, b"orders") == b"order 18"


def test_rewrap_keeps_the_plaintext_moves_the_version_and_is_audited_without_it(
    world: World,
) -> None:
    world.make_key("dek", "chacha20-poly1305")
    plaintext = b"the-plaintext-that-must-not-be-logged"
    old = world.keys.encrypt(world.user, "dek", plaintext, b"a")
    world.keys.rotate(world.admin, "dek")
    rewrapped = world.keys.rewrap(world.user, "dek", old, b"a")
    assert rewrapped.startswith("tether:v2:") and rewrapped != old
    assert world.keys.decrypt(world.user, "dek", rewrapped, b"a") == plaintext
    assert world.keys.flush_usage() > 0
    entries = [
        r for r in world.audit("key.usage") if json.loads(r.details)["operation"] == "rewrap"
    ]
    assert len(entries) == 1
    details = json.loads(entries[0].details)
    assert details == {
        **details,
        "key": "dek",
        "version": 2,
        "from_version": 1,
        "count": 1,
        "failed": 0,
    }
    everything = "".join(r.details + (r.reason or "") for r in world.audit(""))
    assert plaintext.decode() not in everything
    assert old.split(":")[2] not in everything and rewrapped.split(":")[2] not in everything
    assert world.node.verify_audit().ok


def test_lowering_min_decryption_needs_approvals(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    old = w.keys.encrypt(w.user, "dek", b"x")
    w.keys.rotate(w.admin, "dek")
    w.keys.configure(w.admin, "dek", {"min_decryption_version": 2})
    result = w.keys.configure(w.admin, "dek", {"min_decryption_version": 1})
    (request,) = result.approvals
    assert request.operation is Operation.LOWER_MIN_DECRYPTION
    assert result.key.key.min_decryption_version == 2
    with pytest.raises(VersionNotAllowed):
        w.keys.decrypt(w.user, "dek", old)
    w.keys.approve(w.approver("bob"), request.id)
    done = w.keys.approve(w.approver("carol"), request.id)
    assert done.state is ApprovalState.EXECUTED
    assert w.keys.get(w.admin, "dek").key.min_decryption_version == 1
    assert w.keys.decrypt(w.user, "dek", old) == b"x"


def test_minimum_versions_follow_vault_rules(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    w.keys.rotate(w.admin, "dek")
    w.keys.rotate(w.admin, "dek")
    for bad in (
        {"min_decryption_version": 4},  # past the latest
        {"min_decryption_version": 0},
        {"min_encryption_version": 4},
        {"min_decryption_version": 2, "min_encryption_version": 1},  # below min_decryption
        {"unknown": 1},
    ):
        with pytest.raises(InvalidKeyRequest):
            w.keys.configure(w.admin, "dek", bad)
    w.keys.configure(w.admin, "dek", {"min_decryption_version": 2, "min_encryption_version": 2})
    assert w.keys.encrypt(w.user, "dek", b"x", version=2).startswith("tether:v2:")
    with pytest.raises(VersionNotAllowed):
        w.keys.encrypt(w.user, "dek", b"x", version=1)
    with pytest.raises(InvalidKeyRequest):  # min_decryption past min_encryption
        w.keys.configure(w.admin, "dek", {"min_decryption_version": 3})
    w.keys.configure(w.admin, "dek", {"min_decryption_version": 3, "min_encryption_version": 0})
    assert w.keys.encrypt(w.user, "dek", b"x").startswith("tether:v3:")


def test_trim_deletes_versions_below_the_minimum_after_approvals(world: World) -> None:
    world.make_key("dek", "aes256-gcm")
    old = world.keys.encrypt(world.user, "dek", b"x")
    world.keys.rotate(world.admin, "dek")
    with pytest.raises(InvalidKeyRequest):
        world.keys.trim(world.admin, "dek")  # version 1 still decrypts
    world.keys.configure(world.admin, "dek", {"min_decryption_version": 2})
    request = world.keys.trim(world.admin, "dek")
    assert request.params == {"versions": [1]}
    world.keys.approve(world.approver("bob"), request.id)
    world.keys.approve(world.approver("dave"), request.id)
    key = world.keys.get(world.admin, "dek").key
    assert [v.number for v in key.versions] == [2]
    with world.node.store.read() as tx:
        assert tx.get_sealed("key/dek/v1") is None
        assert tx.get_sealed("key/dek/v2") is not None
    with pytest.raises(VersionNotAllowed):
        world.keys.decrypt(world.user, "dek", old)
    with pytest.raises(InvalidKeyRequest):  # a trimmed version cannot come back
        world.keys.configure(world.admin, "dek", {"min_decryption_version": 1})


def test_batches_return_an_error_entry_for_a_failing_item(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    encrypted = w.keys.encrypt_batch(w.user, "dek", [(b"a", b""), (b"b", b"x"), (b"c", b"")])
    assert all(r.ok for r in encrypted)
    items = [
        (encrypted[0].value, b""),
        (encrypted[1].value, b"wrong"),
        ("nonsense", b""),
        (encrypted[2].value, b""),
    ]
    decrypted = w.keys.decrypt_batch(w.user, "dek", items)
    assert [r.value for r in decrypted] == [b"a", None, None, b"c"]
    assert [r.code for r in decrypted] == [None, "decryption_failed", "decryption_failed", None]
    w.keys.rotate(w.admin, "dek")
    rewrapped = w.keys.rewrap_batch(w.user, "dek", [(encrypted[0].value, b""), ("bad", b"")])
    assert rewrapped[0].value.startswith("tether:v2:") and not rewrapped[1].ok
    w.make_key("signer", "ed25519")
    signatures = w.keys.sign_batch(w.user, "signer", [b"1", b"2"])
    checks = w.keys.verify_batch(
        w.user, "signer", [(b"1", signatures[0].value), (b"2", signatures[0].value)]
    )
    assert [c.value for c in checks] == [True, False]
    w.make_key("mac", "hmac-sha256")
    macs = w.keys.hmac_batch(w.user, "mac", [b"1"])
    assert w.keys.verify(w.user, "mac", b"1", macs[0].value)
