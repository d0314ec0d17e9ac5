"""Separation of duties and the policy decision of every use (Cedar, fail closed)."""

from __future__ import annotations

import json

import pytest

from tests.keys.conftest import World, key_profile
from tether.keys import (
    Approver,
    KeyAdmin,
    KeyOperationDenied,
    KeyService,
    KeysUnavailable,
    KeyUser,
)
from tether.model import Policy


def test_an_admin_cannot_decrypt_and_a_user_cannot_rotate(world: World) -> None:
    world.make_key("dek", "aes256-gcm")
    ciphertext = world.keys.encrypt(world.user, "dek", b"x")
    with pytest.raises(KeyOperationDenied) as caught:
        world.keys.decrypt(world.admin, "dek", ciphertext)
    assert caught.value.status_code == 403
    with pytest.raises(KeyOperationDenied):
        world.keys.encrypt(world.admin, "dek", b"x")
    with pytest.raises(KeyOperationDenied):
        world.keys.rotate(world.user, "dek")
    with pytest.raises(KeyOperationDenied):
        world.keys.configure(world.user, "dek", {"min_decryption_version": 1})
    with pytest.raises(KeyOperationDenied):
        world.keys.create(world.user, "mine", "aes256-gcm", "dek-id")
    with pytest.raises(KeyOperationDenied):
        world.keys.encrypt(Approver("bob"), "dek", b"x")
    assert world.keys.get(world.admin, "dek").key.latest_version == 1
    denied = [r for r in world.audit("key.") if r.result == "denied"]
    assert [(r.action, r.actor) for r in denied] == [
        ("key.decrypt", "key-admin:alice"),
        ("key.encrypt", "key-admin:alice"),
        ("key.rotate", "key-user:orders-api-run"),
        ("key.configure", "key-user:orders-api-run"),
        ("key.create", "key-user:orders-api-run"),
        ("key.encrypt", "approver:bob"),
    ]
    assert world.node.verify_audit().ok


def test_use_needs_an_entitlement_to_the_keys_profile(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    stranger = KeyUser("billing-run", "billing-api", attested=True)
    with pytest.raises(KeyOperationDenied) as caught:
        w.keys.encrypt(stranger, "dek", b"x")  # not in the estate
    from tests.keys.conftest import identity

    w.identities["billing-api"] = identity("billing-api", system="billing")
    with pytest.raises(KeyOperationDenied) as caught:
        w.keys.encrypt(stranger, "dek", b"x")
    assert any("not entitled" in r for r in caught.value.reasons)
    # entitled to decrypt only
    w.entitle("billing-api", "dek-use", ("decrypt",))
    ciphertext = w.keys.encrypt(w.user, "dek", b"x")
    assert w.keys.decrypt(stranger, "dek", ciphertext) == b"x"
    with pytest.raises(KeyOperationDenied) as caught:
        w.keys.encrypt(stranger, "dek", b"x")
    assert any("scope" in r for r in caught.value.reasons)
    # unattested: the default policy permits attested callers only
    with pytest.raises(KeyOperationDenied):
        w.keys.decrypt(KeyUser("billing-token", "billing-api", attested=False), "dek", ciphertext)
    denial = [r for r in w.audit("key.decrypt") if r.result == "denied"][-1]
    assert denial.identity_id == "billing-api"
    assert json.loads(denial.details)["key"] == "dek"


def test_estate_policies_add_conditions_to_key_use(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    ciphertext = w.keys.encrypt(w.user, "dek", b"x")
    w.policies.append(
        Policy(
            "keys.cedar",
            '@id("no-decrypt-outside-tasks")\n'
            'forbid (principal, action == Tether::Action::"decrypt", resource) '
            "unless { context has task };",
        )
    )
    with pytest.raises(KeyOperationDenied) as caught:
        w.keys.decrypt(w.user, "dek", ciphertext)
    assert any("no-decrypt-outside-tasks" in r for r in caught.value.reasons)
    in_task = KeyUser("orders-api-run", "orders-api", attested=True, task_id="tsk_1")
    assert w.keys.decrypt(in_task, "dek", ciphertext) == b"x"
    assert w.keys.encrypt(w.user, "dek", b"y")  # the forbid names decrypt only


def test_a_failing_or_missing_decision_denies(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    for decide in (lambda _r: None, lambda _r: 1 / 0, lambda _r: object()):
        service = KeyService(type(w.keys.parts)(**{**_fields(w.keys.parts), "decide": decide}))
        with pytest.raises(KeyOperationDenied):
            service.encrypt(w.user, "dek", b"x")


def test_a_profile_of_another_provider_does_not_entitle_to_a_key(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    w.profiles["dek-use"] = key_profile("dek-use", "other-key")
    with pytest.raises(KeyOperationDenied) as caught:
        w.keys.encrypt(w.user, "dek", b"x")
    assert any("no profile of provider key" in r for r in caught.value.reasons)


def test_sealed_means_no_key_material_in_memory(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    ciphertext = w.keys.encrypt(w.user, "dek", b"x")
    w.node.barrier.seal()
    with pytest.raises(KeysUnavailable):
        w.keys.decrypt(w.user, "dek", ciphertext)
    assert w.keys._cache == {}
    assert KeyAdmin("a").actor == "key-admin:a"


def _fields(parts: object) -> dict[str, object]:
    return {name: getattr(parts, name) for name in parts.__dataclass_fields__}  # type: ignore[attr-defined]
