"""Crypto policy drives rekeying: a usage counter past its limit rotates on the
encrypting path; age per classification rotates by the job; findings stay open until
old ciphertext is rewrapped and the minimum raised."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.keys.conftest import World, identity
from tether.keys import (
    AEAD_DEFAULT_LIMIT,
    CryptoPolicy,
    InvalidCryptoPolicy,
    InvalidKeyRequest,
    KeyType,
    KeyUser,
    key_using_owners,
    role_conflicts,
)


def test_the_crypto_policy_parses_and_names_a_bad_field() -> None:
    policy = CryptoPolicy.from_spec(
        {
            "usage_limit": {"aes256-gcm": 1000},
            "max_age": {"restricted": "30d"},
            "deprecated": ["ecdsa-p256"],
            "escrow_required": ["restricted", "confidential"],
        }
    )
    assert policy.usage_limit[KeyType.AES256_GCM] == 1000
    assert policy.usage_limit[KeyType.CHACHA20_POLY1305] == AEAD_DEFAULT_LIMIT == 2**30
    assert policy.max_age["restricted"] == dt.timedelta(days=30)
    assert policy.max_age["internal"] == dt.timedelta(days=365)
    assert policy.deprecated == {KeyType.ECDSA_P256}
    assert CryptoPolicy.from_spec(policy.to_spec()) == policy
    assert CryptoPolicy.from_spec(None) == CryptoPolicy()
    for spec, where in [
        ({"usage_limit": {"aes256-gcm": 2**33}}, "crypto_policy.usage_limit.aes256-gcm"),
        ({"usage_limit": {"des": 5}}, "crypto_policy.usage_limit.des"),
        ({"max_age": {"secret": "1d"}}, "crypto_policy.max_age.secret"),
        ({"max_age": {"public": "often"}}, "crypto_policy.max_age.public"),
        ({"deprecated": ["rc4"]}, "crypto_policy.deprecated[0]"),
        ({"escrow_required": "restricted"}, "crypto_policy.escrow_required"),
        ({"escrow_required": ["top"]}, "crypto_policy.escrow_required[0]"),
        ({"rotate": True}, "crypto_policy.rotate"),
    ]:
        with pytest.raises(InvalidCryptoPolicy) as caught:
            CryptoPolicy.from_spec(spec)
        assert str(caught.value).startswith(where + ":"), str(caught.value)


def test_passing_the_usage_limit_rotates_and_a_finding_stays_until_rewrapped(
    world: World,
) -> None:
    world.make_key("dek", "aes256-gcm", usage_limit=5)
    old = [world.keys.encrypt(world.user, "dek", f"row {i}".encode()) for i in range(5)]
    assert all(c.startswith("tether:v1:") for c in old)
    (spent,) = world.keys.findings()  # version 1 is spent: a new version is due
    assert spent.rule == "key-rekey-overdue" and spent.evidence["reasons"] == ["usage-limit"]
    sixth = world.keys.encrypt(world.user, "dek", b"row 5")  # rotation, not refusal
    assert sixth.startswith("tether:v2:")
    info = world.keys.get(world.admin, "dek")
    assert info.key.latest_version == 2
    assert info.versions[0].encryptions >= 5  # reserved: never fewer than made
    assert info.key.versions[0].retired_for == "usage-limit"
    rotation = world.audit("key.rotate")[-1]
    assert rotation.actor == "system:keys" and "usage limit" in (rotation.reason or "")

    for ciphertext in old[:2]:
        world.keys.decrypt(world.user, "dek", ciphertext)
    world.keys.flush_usage()
    (finding,) = world.keys.findings()
    assert finding.rule == "key-old-version-decryptable" and finding.identity_id == "dek-id"
    (version,) = finding.evidence["versions"]
    assert version["version"] == 1 and version["decryptions_since_rotation"] == 2
    assert world.keys.get(world.admin, "dek").versions[0].decryptions_since_rotation == 2

    # Rows 3 and 4 were deleted; the three left are rewrapped (version 2 has room for
    # them: it made one ciphertext of its five).
    rewrapped = [world.keys.rewrap(world.user, "dek", c) for c in old[:3]]
    assert all(c.startswith("tether:v2:") for c in rewrapped)
    assert [f.rule for f in world.keys.findings()] == ["key-old-version-decryptable"]
    world.keys.configure(world.admin, "dek", {"min_decryption_version": 2})
    assert world.keys.findings() == []
    assert [world.keys.decrypt(world.user, "dek", c) for c in rewrapped] == [
        f"row {i}".encode() for i in range(3)
    ]
    assert world.node.verify_audit().ok


def test_the_rotation_job_rotates_by_age_per_classification(mem_world: World) -> None:
    w = mem_world
    w.make_key("restricted-dek", "aes256-gcm", labels={"data_classification": "restricted"})
    w.make_key("public-dek", "aes256-gcm", labels={"data_classification": "public"})
    w.make_key("sig", "ed25519", labels={"data_classification": "restricted"}, max_age="10d")
    assert w.keys.rotate_due() == []
    w.clock.advance(days=91)
    due = [f for f in w.keys.findings() if f.rule == "key-rekey-overdue"]
    assert {f.key for f in due} == {"restricted-dek", "sig"}
    assert w.keys.rotate_due() == [("restricted-dek", ("max-age",)), ("sig", ("max-age",))]
    assert w.keys.get(w.admin, "restricted-dek").key.latest_version == 2
    assert w.keys.get(w.admin, "public-dek").key.latest_version == 1
    assert w.keys.rotate_due() == []
    rules = {(f.key, f.rule) for f in w.keys.findings()}
    assert ("restricted-dek", "key-old-version-decryptable") in rules
    assert ("restricted-dek", "key-rekey-overdue") not in rules


def test_deprecated_types_are_refused_for_new_keys_and_found_on_old_ones(
    mem_world: World,
) -> None:
    w = mem_world
    w.make_key("legacy", "ecdsa-p256")
    w.crypto[0] = CryptoPolicy.from_spec({"deprecated": ["ecdsa-p256"]})
    with pytest.raises(InvalidKeyRequest):
        w.make_key("new", "ecdsa-p256")
    (finding,) = [f for f in w.keys.findings() if f.key == "legacy"]
    assert finding.rule == "key-deprecated-algorithm" and finding.severity == "high"


def test_use_from_another_system_and_a_principal_in_both_roles_are_findings(
    mem_world: World,
) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    w.identities["billing-api"] = identity("billing-api", system="billing")
    w.entitle("billing-api", "dek-use")
    w.keys.encrypt(w.user, "dek", b"x")
    w.keys.encrypt(KeyUser("billing", "billing-api", attested=True), "dek", b"x")
    w.keys.flush_usage()
    (finding,) = w.keys.findings()
    assert finding.rule == "key-foreign-use"
    assert [u["identity"] for u in finding.evidence["users"]] == ["billing-api"]
    # A principal holding key-admin who also owns key-using identities (by its name, or
    # an owner:<id> role) is in conflict; one who only administers is not.
    key_owners = key_using_owners(w.identities.values(), w.profiles)
    assert key_owners == {"team-orders": ["billing-api", "orders-api"]}
    conflicts = role_conflicts(
        {
            "alice": {"key-admin"},
            "eve": {"key-admin", "owner:team-orders"},
            "team-orders": {"key-admin"},
            "olga": {"owner:team-orders"},
        },
        key_owners,
    )
    assert [(c.rule, c.subject) for c in conflicts] == [
        ("key-role-conflict", "principal:eve"),
        ("key-role-conflict", "principal:team-orders"),
    ]
    assert conflicts[0].identity_id is None
    assert conflicts[0].evidence["roles"] == ["key-admin", "owner:team-orders"]
    assert conflicts[0].evidence["key_using_identities"] == ["billing-api", "orders-api"]
