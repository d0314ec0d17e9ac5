"""Dual control: M-of-N approvals from a named group within a window, each step audited."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.keys.conftest import World
from tether.keys import (
    ApprovalClosed,
    ApprovalRefused,
    ApprovalState,
    ApproverGroup,
    InvalidApproverGroup,
    KeyNotFound,
    KeyOperationDenied,
    KeyPendingDeletion,
)


def test_deleting_takes_two_distinct_approvers_of_a_two_of_three_group(world: World) -> None:
    world.make_key("dek", "aes256-gcm")
    ciphertext = world.keys.encrypt(world.user, "dek", b"x")
    request = world.keys.request_delete(world.admin, "dek", "decommissioned")
    assert request.state is ApprovalState.PENDING and request.threshold == 2

    with pytest.raises(ApprovalRefused):  # the requester approving their own request
        world.keys.approve(world.approver("alice"), request.id)
    with pytest.raises(ApprovalRefused):  # not a member
        world.keys.approve(world.approver("mallory"), request.id)

    once = world.keys.approve(world.approver("bob"), request.id)
    assert once.state is ApprovalState.PENDING and once.approvers == ("bob",)
    assert world.keys.get(world.admin, "dek").key.deletion is None  # one approval does nothing
    assert world.keys.decrypt(world.user, "dek", ciphertext) == b"x"
    with pytest.raises(ApprovalRefused):  # each principal counts once
        world.keys.approve(world.approver("bob"), request.id)

    done = world.keys.approve(world.approver("carol"), request.id)
    assert done.state is ApprovalState.EXECUTED
    deletion = world.keys.get(world.admin, "dek").key.deletion
    assert deletion is not None
    assert deletion.due_at == world.clock.now + dt.timedelta(days=7)  # scheduled, not done
    with pytest.raises(KeyPendingDeletion):
        world.keys.decrypt(world.user, "dek", ciphertext)

    actions = [r.action for r in world.audit("key.")]
    assert actions.count("key.approval.approve") == 5  # two refused, one twice, two counted
    assert "key.approval.request" in actions
    assert "key.approval.execute" in actions and "key.delete.schedule" in actions
    refused = [r for r in world.audit("key.approval.approve") if r.result == "denied"]
    assert {r.actor for r in refused} == {
        "approver:alice",
        "approver:mallory",
        "approver:bob",
    }
    assert world.node.verify_audit().ok


def test_a_scheduled_deletion_is_cancellable_and_purged_only_when_due(world: World) -> None:
    world.make_key("dek", "aes256-gcm")
    ciphertext = world.keys.encrypt(world.user, "dek", b"x")
    for _ in range(2):
        request = world.keys.request_delete(world.admin, "dek")
        world.keys.approve(world.approver("bob"), request.id)
        world.keys.approve(world.approver("dave"), request.id)
        if world.keys.get(world.admin, "dek").key.deletion and _ == 0:
            world.keys.cancel_deletion(world.admin, "dek", "still needed")
            assert world.keys.decrypt(world.user, "dek", ciphertext) == b"x"
    assert world.keys.purge_due(world.clock.now + dt.timedelta(days=6)) == []
    assert world.keys.purge_due(world.clock.now + dt.timedelta(days=7)) == ["dek"]
    with pytest.raises(KeyNotFound):
        world.keys.get(world.admin, "dek")
    with world.node.store.read() as tx:
        assert tx.get_sealed("key/dek/v1") is None
    actions = [r.action for r in world.audit("key.")]
    assert "key.delete.cancel" in actions and actions[-1] == "key.purge"
    assert world.node.verify_audit().ok


def test_one_deny_denies_and_a_late_vote_finds_it_expired(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    denied = w.keys.request_delete(w.admin, "dek")
    w.keys.approve(w.approver("bob"), denied.id)
    after = w.keys.deny(w.approver("carol"), denied.id, "this key still protects orders")
    assert after.state is ApprovalState.DENIED
    with pytest.raises(ApprovalClosed):
        w.keys.approve(w.approver("dave"), denied.id)
    assert w.keys.get(w.admin, "dek").key.deletion is None

    late = w.keys.request_delete(w.admin, "dek")
    w.keys.approve(w.approver("bob"), late.id)
    w.clock.advance(hours=2)  # the group's window is an hour
    with pytest.raises(ApprovalClosed):
        w.keys.approve(w.approver("carol"), late.id)
    assert w.keys.approval(w.admin, late.id).state is ApprovalState.EXPIRED
    assert w.keys.get(w.admin, "dek").key.deletion is None
    assert [r.action for r in w.audit("key.approval.expire")] == ["key.approval.expire"]

    pending = w.keys.request_delete(w.admin, "dek")
    w.clock.advance(hours=2)
    assert w.keys.expire_approvals() == 1
    assert w.keys.approvals(w.admin, state="expired", key="dek")[-1].id == pending.id
    assert w.node.verify_audit().ok


def test_only_approvers_vote_and_only_admins_request(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    with pytest.raises(KeyOperationDenied):
        w.keys.request_delete(w.user, "dek")
    request = w.keys.request_delete(w.admin, "dek")
    with pytest.raises(ApprovalRefused):
        w.keys.approve(w.admin, request.id)  # an admin token is not an approver's
    with pytest.raises(ApprovalRefused):
        w.keys.cancel_approval(type(w.admin)("bob"), request.id)  # only the requester cancels
    cancelled = w.keys.cancel_approval(w.admin, request.id)
    assert cancelled.state is ApprovalState.CANCELLED
    denied = [r for r in w.audit("key.") if r.result == "denied"]
    assert {r.action for r in denied} == {"key.delete", "key.approval.approve"}


def test_no_approver_group_means_no_destructive_operation(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    w.groups.clear()
    with pytest.raises(KeyOperationDenied):
        w.keys.request_delete(w.admin, "dek")


def test_approver_groups_parse_with_the_path_of_a_bad_field() -> None:
    group = ApproverGroup.from_spec(
        {"id": "sec", "members": ["a", "b", "c"], "threshold": 2, "window": "4h"},
        "approver_groups[0]",
    )
    assert group.window == dt.timedelta(hours=4)
    assert ApproverGroup.from_spec(group.to_spec()) == group
    for spec, where in [
        ({"id": "g", "members": ["a"], "threshold": 1}, "approver_groups[0].threshold"),
        ({"id": "g", "members": ["a", "b"], "threshold": 3}, "approver_groups[0].threshold"),
        ({"id": "g", "members": ["a", "a"], "threshold": 2}, "approver_groups[0].members"),
        ({"id": "g", "members": "a", "threshold": 2}, "approver_groups[0].members"),
        ({"members": ["a", "b"], "threshold": 2}, "approver_groups[0].id"),
        (
            {"id": "g", "members": ["a", "b"], "threshold": 2, "window": "soon"},
            "approver_groups[0].window",
        ),
        (
            {"id": "g", "members": ["a", "b"], "threshold": 2, "extra": 1},
            "approver_groups[0].extra",
        ),
    ]:
        with pytest.raises(InvalidApproverGroup) as caught:
            ApproverGroup.from_spec(spec, "approver_groups[0]")
        assert str(caught.value).startswith(where + ":"), str(caught.value)


def test_every_step_names_the_approval_and_the_key(mem_world: World) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm")
    request = w.keys.request_delete(w.admin, "dek")
    w.keys.approve(w.approver("bob"), request.id, "ok")
    w.keys.approve(w.approver("carol"), request.id)
    steps = [r for r in w.audit("key.approval.")]
    assert [s.action for s in steps] == [
        "key.approval.request",
        "key.approval.approve",
        "key.approval.approve",
        "key.approval.execute",
    ]
    for step in steps:
        details = json.loads(step.details)
        assert details["approval"] == request.id and details["key"] == "dek"
    assert steps[0].actor == "key-admin:alice" and steps[1].actor == "approver:bob"
    assert steps[0].identity_id == "dek-id"
