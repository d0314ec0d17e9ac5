"""RFC 7662 introspection and RFC 7009 revocation of the tokens Tether issued."""

from __future__ import annotations

from typing import Any

from tether.issuance._parts import IssuanceParts
from tether.issuance._subjects import Subjects
from tether.lease import RevokeTarget
from tether.model import Lease, LeaseState, Task, TaskStatus, Usage


class Introspection:
    def __init__(self, parts: IssuanceParts, subjects: Subjects) -> None:
        self._parts = parts
        self._subjects = subjects

    def introspect(self, token: str) -> dict[str, Any]:
        standing = self._subjects.standing(token) if token else None
        if standing is None:
            return {"active": False}
        return self._answer(*standing)

    def from_memory(self, token: str) -> dict[str, Any] | None:
        """`introspect` when memory alone can answer (see Subjects.remembered), else None."""
        standing = self._subjects.remembered(token) if token else None
        return None if standing is None else self._answer(*standing)

    def _answer(self, lease: Lease, task: Task | None) -> dict[str, Any]:
        parts = self._parts
        if lease.state is not LeaseState.ACTIVE or lease.expires_at <= parts.clock():
            return {"active": False}
        if lease.task_id is not None and (task is None or task.status is not TaskStatus.ACTIVE):
            return {"active": False}
        parts.record_usage(
            Usage(
                identity_id=lease.identity_id,
                at=parts.clock(),
                action="introspect",
                credential=lease.id,
                entitlement=lease.profile_id or "",
                scopes=lease.scopes,
            )
        )
        result: dict[str, Any] = {
            "active": True,
            "scope": " ".join(lease.scopes),
            "client_id": lease.identity_id,
            "sub": lease.identity_id,
            "aud": lease.audience,
            "iss": parts.issuer_url(),
            "exp": int(lease.expires_at.timestamp()),
            "iat": int(lease.issued_at.timestamp()),
            "nbf": int(lease.issued_at.timestamp()),
            "jti": lease.id,
            "token_type": "Bearer",
            "tether_lease": lease.id,
            "tether_owner": lease.owner_id,
            "tether_task": lease.task_id,
            "tether_profile": lease.profile_id,
        }
        act = lease.act_claim()
        if act is not None:
            result["act"] = act
        return {k: v for k, v in result.items() if v is not None}

    def revoke_token(self, token: str, actor: str) -> int:
        """RFC 7009: revoke the lease a token stands for, and everything derived from it."""
        lease = self._subjects.lease_for(token) if token else None
        if lease is None or not lease.state.live:
            return 0  # RFC 7009 §2.2: an unknown or dead token is not an error
        return self._parts.leases.revoke(
            RevokeTarget(lease_id=lease.id), "revoked by its holder", actor
        )
