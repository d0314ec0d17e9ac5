"""Exceptions through the API: a time-bound waiver is requested by one principal and
approved by another (never the requester), then covers its finding until it expires.

Waivers declared in the estate (`exceptions:`) were approved in review of the file;
these are the same thing for an estate that cannot wait for a merge. Every change is an
audit entry; an expired or revoked waiver stops covering at once, and the finding it
hid reopens at the next evaluation.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from tether._internal.timeutil import InvalidValue, format_time, parse_time
from tether.audit import AuditLog
from tether.cluster import publish_govern_changed
from tether.estate import EstateView, EstateViewHolder
from tether.govern._engine import EXCEPTION, page_all
from tether.govern.errors import AlreadyDecided, InvalidException, UnknownGovernObject
from tether.model import RULES, AuditEvent
from tether.store import GovernFilter, GovernRecord, Store

#: Longest an exception may run: a waiver is a plan to fix, not a way to forget.
MAX_EXCEPTION = dt.timedelta(days=365)
_TEXT = 512


def _text(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _TEXT:
        raise InvalidException(f"{name}: must be a non-empty string of at most {_TEXT} characters")
    return value.strip()


class Exceptions:
    def __init__(
        self,
        store: Store,
        view: EstateViewHolder,
        audit: AuditLog,
        clock: Callable[[], dt.datetime],
        changed: Callable[[set[str]], None],
    ) -> None:
        self._store = store
        self._view = view
        self._audit = audit
        self._clock = clock
        self._changed = changed

    def request(self, body: Mapping[str, Any], requester: str) -> dict[str, Any]:
        now = self._clock()
        rule = _text(body, "rule")
        if rule not in RULES:
            raise InvalidException(f"rule: unknown rule {rule!r}")
        identity_id = _text(body, "identity")
        assert identity_id is not None
        identity = self._view.current.identities.get(identity_id)
        if identity is None:
            raise InvalidException(f"identity: no identity {identity_id!r}")
        try:
            expires = parse_time(_text(body, "expires") or "")
        except InvalidValue as exc:
            raise InvalidException(f"expires: {exc}") from None
        if expires <= now:
            raise InvalidException("expires: must be in the future")
        if expires > now + MAX_EXCEPTION:
            raise InvalidException("expires: an exception may run at most 365 days")
        exception_id = f"exc_{secrets.token_hex(8)}"
        spec = {
            "id": exception_id,
            "rule": rule,
            "identity": identity_id,
            "scope": _text(body, "scope", required=False),
            "compensating_control": _text(body, "compensating_control"),
            "reason": _text(body, "reason", required=False),
            "requested_by": requester,
            "approved_by": "",
            "expires": format_time(expires),
            "requested_at": format_time(now),
            "state": "requested",
        }
        record = GovernRecord(
            type=EXCEPTION,
            id=exception_id,
            group_id=str(rule),
            state="requested",
            spec=spec,
            updated_at=now,
            identity_id=identity_id,
            owner_id=identity.owner_id,
        )
        self._write(record, "exception.request", requester)
        return spec

    def approve(self, exception_id: str, approver: str) -> dict[str, Any]:
        record = self._get(exception_id)
        if record.state != "requested":
            raise AlreadyDecided(f"exception {exception_id} is {record.state}")
        if approver == record.spec["requested_by"]:
            raise InvalidException("approved_by: the approver of an exception is not its requester")
        now = self._clock()
        if parse_time(record.spec["expires"]) <= now:
            raise InvalidException("expires: the exception expired before it was approved")
        spec = {
            **record.spec,
            "approved_by": approver,
            "approved_at": format_time(now),
            "state": "active",
        }
        self._write(
            replace(record, state="active", spec=spec, updated_at=now),
            "exception.approve",
            approver,
            was=("requested",),
        )
        return spec

    def revoke(self, exception_id: str, actor: str) -> dict[str, Any]:
        record = self._get(exception_id)
        if record.state in ("revoked", "expired"):
            raise AlreadyDecided(f"exception {exception_id} is {record.state}")
        now = self._clock()
        spec = {
            **record.spec,
            "state": "revoked",
            "revoked_by": actor,
            "revoked_at": format_time(now),
        }
        self._write(
            replace(record, state="revoked", spec=spec, updated_at=now),
            "exception.revoke",
            actor,
            was=("requested", "active"),
        )
        return spec

    def expire_due(self) -> int:
        """Mark active exceptions past their expiry expired (audited)."""
        now = self._clock()
        with self._store.read() as tx:
            active = page_all(tx, GovernFilter(type=EXCEPTION, states=("active",)))
        due = [r for r in active if parse_time(r.spec["expires"]) <= now]
        expired = 0
        for record in due:
            spec = {**record.spec, "state": "expired"}
            try:
                self._write(
                    replace(record, state="expired", spec=spec, updated_at=now),
                    "exception.expire",
                    "system:govern",
                    was=("active",),
                )
            except AlreadyDecided:
                continue  # revoked meanwhile
            expired += 1
        return expired

    def listing(
        self, owner_in: tuple[str, ...] | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        with self._store.read() as tx:
            records = page_all(tx, GovernFilter(type=EXCEPTION, states=(state,) if state else None))
        view = self._view.current
        out = [dict(r.spec) for r in records if owner_in is None or _owner_now(view, r) in owner_in]
        now = self._clock()
        for waiver in self._view.current.exceptions.values():
            identity = self._view.current.identities.get(waiver.identity)
            if owner_in is not None and (identity is None or identity.owner_id not in owner_in):
                continue
            declared = {
                **waiver.to_spec(),
                "source": "estate",
                "state": "active" if waiver.active(now) else "expired",
            }
            if state is None or declared["state"] == state:
                out.append(declared)
        return out

    def _get(self, exception_id: str) -> GovernRecord:
        with self._store.read() as tx:
            record = tx.get_govern(EXCEPTION, exception_id)
        if record is None:
            raise UnknownGovernObject(f"no exception {exception_id!r}")
        return record

    def _write(
        self,
        record: GovernRecord,
        action: str,
        actor: str,
        was: tuple[str, ...] | None = None,
    ) -> None:
        """Write `record` and its audit entry; with `was`, only if the stored state is
        still one of those (read again in the write: concurrent decisions do not
        overwrite each other)."""
        with self._store.transaction() as tx:
            if was is not None:
                current = tx.get_govern(EXCEPTION, record.id)
                if current is None or current.state not in was:
                    state = "gone" if current is None else current.state
                    raise AlreadyDecided(f"exception {record.id} is {state}")
            tx.put_govern([record])
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action=action,
                        actor=actor,
                        identity_id=record.identity_id,
                        owner_id=record.owner_id,
                        reason=record.spec.get("reason"),
                        details={
                            "exception": record.id,
                            "rule": record.group_id,
                            "state": record.state,
                            "expires": record.spec["expires"],
                            "compensating_control": record.spec["compensating_control"],
                            "requested_by": record.spec["requested_by"],
                            "approved_by": record.spec.get("approved_by") or None,
                        },
                    )
                ],
            )
            if record.identity_id:  # after the audit append (the feed's lock order)
                publish_govern_changed(tx, [record.identity_id])
        if record.identity_id:
            self._changed({record.identity_id})


def _owner_now(view: EstateView, record: GovernRecord) -> str | None:
    identity = view.identities.get(record.identity_id or "")
    return identity.owner_id if identity is not None else record.owner_id
