"""Dual control: requests that take effect only after M of N approvals.

An `ApproverGroup` (the estate's `approver_groups:`) names its members, the threshold M
and the window in which M approvals must arrive. The rules, pure and checked here:

- the requester can neither approve nor deny their own request;
- only members vote; each principal counts once (a second vote is refused);
- one deny from a member denies the request at once (a single objection is enough to
  stop a destructive change; the requester may ask again);
- a vote after the window finds the request expired;
- the M-th distinct approval approves it, and the service executes it in the same
  transaction (a key deletion is then *scheduled*, not done).
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tether._internal.timeutil import format_duration, format_time, parse_duration, parse_time
from tether.keys.errors import ApprovalClosed, ApprovalRefused, InvalidApproverGroup

APPROVAL_TYPE = "key_approval"
DEFAULT_WINDOW = dt.timedelta(hours=24)


class Operation(enum.StrEnum):
    DELETE_KEY = "delete-key"
    DELETE_VERSION = "delete-version"
    LOWER_MIN_DECRYPTION = "lower-min-decryption"
    ESCROW_RECOVERY = "escrow-recovery"
    CHANGE_CRYPTO_POLICY = "change-crypto-policy"


class ApprovalState(enum.StrEnum):
    PENDING = "pending"
    #: Approved, effect not yet taken (escrow recovery: the bundle not yet exported).
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    EXECUTED = "executed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ApproverGroup:
    id: str
    members: tuple[str, ...]
    threshold: int
    window: dt.timedelta = DEFAULT_WINDOW

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], path: str = "approver_groups[]") -> ApproverGroup:
        """`{id, members: [names], threshold, window?: 24h}`; InvalidApproverGroup names
        the bad field. A threshold of 1 is refused: that is not dual control."""
        if not isinstance(spec, Mapping):
            raise InvalidApproverGroup(f"{path}: must be a mapping")
        known = {"id", "members", "threshold", "window"}
        for name in spec:
            if name not in known:
                raise InvalidApproverGroup(f"{path}.{name}: unknown field")
        group_id = spec.get("id")
        if not isinstance(group_id, str) or not group_id:
            raise InvalidApproverGroup(f"{path}.id: is required")
        members = spec.get("members")
        if (
            not isinstance(members, list | tuple)
            or not members
            or not all(isinstance(m, str) and m for m in members)
        ):
            raise InvalidApproverGroup(f"{path}.members: must be a list of principal names")
        if len(set(members)) != len(members):
            raise InvalidApproverGroup(f"{path}.members: a member is named twice")
        threshold = spec.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise InvalidApproverGroup(f"{path}.threshold: must be an integer")
        if not 2 <= threshold <= len(members):
            raise InvalidApproverGroup(
                f"{path}.threshold: must be from 2 to the number of members ({len(members)})"
            )
        window = DEFAULT_WINDOW
        if "window" in spec:
            try:
                window = parse_duration(str(spec["window"]))
            except (ValueError, TypeError):
                raise InvalidApproverGroup(
                    f"{path}.window: must be a duration such as 24h"
                ) from None
        return cls(group_id, tuple(members), threshold, window)

    def to_spec(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "members": list(self.members),
            "threshold": self.threshold,
            "window": format_duration(self.window),
        }


@dataclass(frozen=True, slots=True)
class Vote:
    principal: str
    at: dt.datetime
    comment: str | None = None

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"principal": self.principal, "at": format_time(self.at)}
        if self.comment:
            spec["comment"] = self.comment
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Vote:
        return cls(spec["principal"], parse_time(spec["at"]), spec.get("comment"))


def new_approval_id() -> str:
    return f"apr_{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: str
    operation: Operation
    key: str
    params: Mapping[str, Any]
    requester: str
    group_id: str
    threshold: int
    created_at: dt.datetime
    expires_at: dt.datetime
    state: ApprovalState = ApprovalState.PENDING
    approvals: tuple[Vote, ...] = ()
    denials: tuple[Vote, ...] = ()
    reason: str | None = None
    #: When it was executed (or the bundle exported), and what it did.
    executed_at: dt.datetime | None = None
    result: Mapping[str, Any] = field(default_factory=dict)

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(v.principal for v in self.approvals)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation.value,
            "key": self.key,
            "params": dict(self.params),
            "requester": self.requester,
            "group": self.group_id,
            "threshold": self.threshold,
            "created_at": format_time(self.created_at),
            "expires_at": format_time(self.expires_at),
            "state": self.state.value,
            "approvals": [v.to_spec() for v in self.approvals],
            "denials": [v.to_spec() for v in self.denials],
            "result": dict(self.result),
        }
        if self.reason is not None:
            spec["reason"] = self.reason
        if self.executed_at is not None:
            spec["executed_at"] = format_time(self.executed_at)
        return spec

    to_dict = to_spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ApprovalRequest:
        executed = spec.get("executed_at")
        return cls(
            id=spec["id"],
            operation=Operation(spec["operation"]),
            key=spec["key"],
            params=dict(spec.get("params", {})),
            requester=spec["requester"],
            group_id=spec["group"],
            threshold=int(spec["threshold"]),
            created_at=parse_time(spec["created_at"]),
            expires_at=parse_time(spec["expires_at"]),
            state=ApprovalState(spec["state"]),
            approvals=tuple(Vote.from_spec(v) for v in spec.get("approvals", ())),
            denials=tuple(Vote.from_spec(v) for v in spec.get("denials", ())),
            reason=spec.get("reason"),
            executed_at=None if executed is None else parse_time(executed),
            result=dict(spec.get("result", {})),
        )


def open_request(
    operation: Operation,
    key: str,
    params: Mapping[str, Any],
    requester: str,
    group: ApproverGroup,
    now: dt.datetime,
    reason: str | None = None,
) -> ApprovalRequest:
    return ApprovalRequest(
        id=new_approval_id(),
        operation=operation,
        key=key,
        params=dict(params),
        requester=requester,
        group_id=group.id,
        threshold=group.threshold,
        created_at=now,
        expires_at=now + group.window,
        reason=reason,
    )


def expired(request: ApprovalRequest, now: dt.datetime) -> bool:
    return request.state is ApprovalState.PENDING and request.expires_at <= now


def _check_vote(
    request: ApprovalRequest, group: ApproverGroup | None, principal: str, now: dt.datetime
) -> None:
    if request.state is not ApprovalState.PENDING:
        raise ApprovalClosed(f"approval {request.id} is {request.state.value}, not pending")
    if expired(request, now):
        raise ApprovalClosed(f"approval {request.id} expired at {format_time(request.expires_at)}")
    if principal == request.requester:
        raise ApprovalRefused(
            f"{principal} requested {request.id} and cannot vote on their own request"
        )
    if group is None or principal not in group.members:
        raise ApprovalRefused(f"{principal} is not a member of approver group {request.group_id}")
    if principal in request.approvers or any(v.principal == principal for v in request.denials):
        raise ApprovalRefused(f"{principal} has voted on {request.id} already")


def approve(
    request: ApprovalRequest,
    group: ApproverGroup | None,
    principal: str,
    now: dt.datetime,
    comment: str | None = None,
) -> ApprovalRequest:
    """One more approval; APPROVED once `threshold` distinct members approved."""
    _check_vote(request, group, principal, now)
    approvals = (*request.approvals, Vote(principal, now, comment))
    state = ApprovalState.APPROVED if len(approvals) >= request.threshold else request.state
    return replace(request, approvals=approvals, state=state)


def deny(
    request: ApprovalRequest,
    group: ApproverGroup | None,
    principal: str,
    now: dt.datetime,
    comment: str | None = None,
) -> ApprovalRequest:
    """One member's deny closes the request."""
    _check_vote(request, group, principal, now)
    return replace(
        request,
        denials=(*request.denials, Vote(principal, now, comment)),
        state=ApprovalState.DENIED,
    )
