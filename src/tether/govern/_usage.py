"""Usage evidence: from uses to bounded daily rollups, and the lines of POST /v1/usage.

Uses are many (every issuance, introspection and session sample); rollups are few (one
per identity, credential, entitlement and day). A process adds uses to an in-memory
buffer keyed like the rollups, bounded by `max_keys`, and flushes it in one transaction
(`Tx.merge_usage` adds to what other processes flushed). A crash loses at most one
flush interval of counts; the audit log keeps the raw events that are evidence.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether._internal.timeutil import InvalidValue, parse_time
from tether.cluster import publish_govern_changed
from tether.govern.errors import InvalidUsage
from tether.model import Usage
from tether.store import USAGE_DISTINCT_CAP, Store, StoreError, UsageRollup, merge_rollups

log = logging.getLogger("tether.govern")

_Key = tuple[str, dt.date, str, str]
#: Longest text kept from a reported field: a source, a user agent, a resource.
_MAX_TEXT = 256
_MAX_SCOPES = 64


def _facets(usage: Usage) -> dict[str, tuple[str, ...]]:
    facets: dict[str, tuple[str, ...]] = {"action": (usage.action,)}
    for name in (
        "source",
        "user_agent",
        "resource",
        "subject",
        "environment",
        "application",
        "actor",
    ):
        value = getattr(usage, name)
        if value:
            facets[name] = (value[:_MAX_TEXT],)
    if usage.scopes:
        facets["scope"] = tuple(sorted(set(usage.scopes)))
    return facets


def rollup_of(usage: Usage) -> UsageRollup:
    at = usage.at.astimezone(dt.UTC)
    return UsageRollup(
        identity_id=usage.identity_id,
        day=at.date(),
        first_seen=at,
        last_seen=at,
        credential=usage.credential,
        entitlement=usage.entitlement,
        count=1,
        facets=_facets(usage),
    )


def _key(rollup: UsageRollup) -> _Key:
    return (rollup.identity_id, rollup.day, rollup.credential, rollup.entitlement)


def combine(rollups: Iterable[UsageRollup]) -> list[UsageRollup]:
    """Rollups with the same key merged into one (what a flush writes)."""
    merged: dict[_Key, UsageRollup] = {}
    for rollup in rollups:
        key = _key(rollup)
        held = merged.get(key)
        merged[key] = rollup if held is None else merge_rollups(held, rollup)
    return list(merged.values())


class _Tally:
    """One key's uses while buffered: mutable, so a use on the request path costs a few
    comparisons and set additions (values past a bound are dropped: the store caps)."""

    __slots__ = ("count", "facets", "first", "last")

    def __init__(self, rollup: UsageRollup) -> None:
        self.count = rollup.count
        self.first = rollup.first_seen
        self.last = rollup.last_seen
        self.facets = {name: set(values) for name, values in rollup.facets.items()}

    def add(self, rollup: UsageRollup) -> None:
        self.count += rollup.count
        self.first = min(self.first, rollup.first_seen)
        self.last = max(self.last, rollup.last_seen)
        for name, values in rollup.facets.items():
            held = self.facets.setdefault(name, set())
            if len(held) < _BUFFERED_DISTINCT:
                held.update(values)

    def rollup(self, key: _Key) -> UsageRollup:
        identity_id, day, credential, entitlement = key
        return UsageRollup(
            identity_id=identity_id,
            day=day,
            first_seen=self.first,
            last_seen=self.last,
            credential=credential,
            entitlement=entitlement,
            count=self.count,
            facets={name: tuple(sorted(values)) for name, values in self.facets.items()},
        )


#: Distinct values a buffered facet keeps (the store keeps USAGE_DISTINCT_CAP of them).
_BUFFERED_DISTINCT = 4 * USAGE_DISTINCT_CAP


class UsageRecorder:
    """Buffers uses as rollups and flushes them to the store."""

    def __init__(self, store: Store, *, max_keys: int = 20_000) -> None:
        self._store = store
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._buffer: dict[_Key, _Tally] = {}
        #: Called with the identity ids of each flush, once committed (re-evaluation).
        self.on_flushed: list[Callable[[set[str]], None]] = []

    def record(self, usage: Usage) -> None:
        rollup = rollup_of(usage)
        with self._lock:
            full = self._add(rollup)
        if full:
            self.flush()

    def _add(self, rollup: UsageRollup) -> bool:
        """Add to the buffer (the lock held); whether it is full now."""
        key = _key(rollup)
        held = self._buffer.get(key)
        if held is None:
            self._buffer[key] = _Tally(rollup)
        else:
            held.add(rollup)
        return len(self._buffer) >= self._max_keys

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Write what is buffered; on a store failure keep it (bounded) for the next try."""
        with self._lock:
            batch, self._buffer = self._buffer, {}
        if not batch:
            return 0
        rollups = [tally.rollup(key) for key, tally in batch.items()]
        try:
            self.write(rollups)
        except StoreError:
            log.warning("usage flush failed; kept for the next one", extra={"rollups": len(batch)})
            with self._lock:
                for rollup in rollups:
                    if len(self._buffer) >= self._max_keys and _key(rollup) not in self._buffer:
                        break  # bounded: the oldest counts are the ones given up
                    self._add(rollup)
            return 0
        return len(rollups)

    def write(self, rollups: Sequence[UsageRollup]) -> None:
        """Merge these rollups into the store now, and tell the listeners."""
        touched = {r.identity_id for r in rollups}
        with self._store.transaction() as tx:
            tx.merge_usage(rollups)
            # The leader may be another process: it hears of the change on the feed.
            publish_govern_changed(tx, sorted(touched))
        for listener in self.on_flushed:
            listener(touched)


# -- POST /v1/usage --

#: The fields a usage line may carry (the contract of POST /v1/usage).
USAGE_FIELDS = frozenset(
    {
        "identity",
        "credential_fingerprint",
        "at",
        "source",
        "user_agent",
        "action",
        "resource",
        "scopes",
    }
)


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "error": self.error}


def _text(line: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = line.get(name)
    if value is None:
        if required:
            raise InvalidUsage(f"{name}: is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidUsage(f"{name}: must be a non-empty string")
    if len(value) > _MAX_TEXT:
        raise InvalidUsage(f"{name}: is longer than {_MAX_TEXT} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidUsage(f"{name}: must not contain control characters")
    return value


def parse_usage_line(
    line: Any,
    now: dt.datetime,
    *,
    resolve_credential: Callable[[str], tuple[str, str] | None],
    known_identity: Callable[[str], bool],
) -> Usage:
    """One reported use, checked; raise InvalidUsage naming the field.

    `resolve_credential` maps a fingerprint to (identity id, entitlement) or None when
    Tether does not know it; `known_identity` says whether an identity id exists.
    """
    if line is None:
        raise InvalidUsage("(line): is not valid JSON")
    if not isinstance(line, Mapping):
        raise InvalidUsage("(line): must be a JSON object")
    unknown = sorted(set(line) - USAGE_FIELDS)
    if unknown:
        raise InvalidUsage(f"{unknown[0]}: is not a usage field")
    identity = _text(line, "identity")
    fingerprint = _text(line, "credential_fingerprint")
    if (identity is None) == (fingerprint is None):
        raise InvalidUsage("identity: give exactly one of identity or credential_fingerprint")
    entitlement = ""
    if fingerprint is not None:
        resolved = resolve_credential(fingerprint)
        if resolved is None:
            raise InvalidUsage("credential_fingerprint: no credential Tether knows")
        identity, entitlement = resolved
    elif identity is not None and not known_identity(identity):
        raise InvalidUsage(f"identity: no identity {identity!r}")
    assert identity is not None
    raw_at = _text(line, "at", required=True)
    try:
        at = parse_time(raw_at or "")
    except InvalidValue as exc:
        raise InvalidUsage(f"at: {exc}") from None
    if at > now + dt.timedelta(minutes=5):
        raise InvalidUsage("at: is in the future")
    scopes = line.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        raise InvalidUsage("scopes: must be a list of strings")
    if len(scopes) > _MAX_SCOPES or any(len(s) > _MAX_TEXT for s in scopes):
        raise InvalidUsage(f"scopes: at most {_MAX_SCOPES} scopes of {_MAX_TEXT} characters")
    return Usage(
        identity_id=identity,
        at=at,
        action=_text(line, "action") or "use",
        credential=fingerprint or "",
        entitlement=entitlement,
        source=_text(line, "source", required=True),
        user_agent=_text(line, "user_agent"),
        resource=_text(line, "resource"),
        scopes=tuple(scopes),
    )
