"""The alert outbox: alerts are written in the transaction that raised them, then
delivered by the background, retried until they are.

`enqueue(tx, alert)` writes one `alert` record per sink that takes the alert's severity,
in the caller's transaction: an alert commits with the finding (or escalation) that
raised it, or neither does, so none is ever lost between the two. `deliver_due()` runs on
the leader's tick: it sends each pending alert whose time has come, outside any
transaction (a slow receiver must not hold the store), then marks it delivered. On
`SinkError` the alert stays pending and waits 1 s, 2 s, 4 s ... up to 10 minutes (with
jitter, so receivers coming back are not hit by every node's backlog at once); nothing is
ever dropped.

Delivery is at least once: a crash between the receiver's 2xx and the "delivered" commit
sends the alert again on the next pass. Every delivery carries the same `id` (the
`X-Tether-Delivery` header of a webhook), so receivers dedupe on it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from tether._internal.timeutil import Clock, format_time, parse_time
from tether.govern._sinks import ConfiguredSink, meets
from tether.govern.errors import SinkError
from tether.store import GovernFilter, GovernRecord, Store, Tx

__all__ = [
    "ALERT",
    "DELIVERED",
    "PENDING",
    "AlertOutbox",
    "FindingGauges",
    "backoff",
]

log = logging.getLogger("tether.govern.alerts")

#: The GovernRecord type of an outbox entry, and its states.
ALERT = "alert"
PENDING = "pending"
DELIVERED = "delivered"

_FIRST_RETRY = dt.timedelta(seconds=1)
_MAX_RETRY = dt.timedelta(minutes=10)
#: How long delivered alerts are kept (to answer "was it sent?") before `prune`.
KEEP_DELIVERED = dt.timedelta(days=7)
_PRUNE_EVERY = dt.timedelta(hours=1)
_PAGE = 500
_RANDOM = secrets.SystemRandom()


def backoff(attempts: int, jitter: float) -> dt.timedelta:
    """The wait after the `attempts`-th failure (1, 2, ...): 1 s doubling, at most
    10 minutes, times 0.75 to 1 by `jitter` (0 to 1) so retries spread out."""
    base = min(_FIRST_RETRY * (1 << min(max(attempts - 1, 0), 20)), _MAX_RETRY)
    return base * (0.75 + 0.25 * min(max(jitter, 0.0), 1.0))


_SEQUENCE = itertools.count()


def _new_id(now: dt.datetime) -> str:
    # Milliseconds, then this process's counter: ids sort in the order alerts were
    # raised, so the oldest go first. The random tail keeps nodes' ids apart.
    sequence = next(_SEQUENCE) % 10**8
    return f"alr_{int(now.timestamp() * 1000):013d}_{sequence:08d}{secrets.token_hex(4)}"


class AlertOutbox:
    def __init__(
        self,
        store: Store,
        sinks: Callable[[], Sequence[ConfiguredSink]],
        clock: Clock,
        *,
        jitter: Callable[[], float] = _RANDOM.random,
        keep_delivered: dt.timedelta = KEEP_DELIVERED,
    ) -> None:
        self._store = store
        self._sinks = sinks
        self._clock = clock
        self._jitter = jitter
        self._keep = keep_delivered
        self._pruned_at: dt.datetime | None = None

    # -- in the caller's transaction --
    def enqueue(self, tx: Tx, alert: Mapping[str, Any]) -> None:
        """Write `alert` for every sink taking its severity, in `tx` (the transaction
        that raised it). The delivered alert is `alert` with `id` (the delivery id, one
        per sink) and `sink` added."""
        now = self._clock()
        records = []
        for configured in self._sinks():
            if not meets(alert.get("severity"), configured.min_severity):
                continue
            record_id = _new_id(now)
            body = {**alert, "id": record_id, "sink": configured.sink.id}
            records.append(
                GovernRecord(
                    type=ALERT,
                    id=record_id,
                    group_id=configured.sink.id,
                    state=PENDING,
                    spec={"alert": body, "attempts": 0, "next_attempt_at": format_time(now)},
                    updated_at=now,
                    identity_id=_text(alert.get("identity")),
                    owner_id=_text(alert.get("owner")),
                )
            )
        if records:
            tx.put_govern(records)

    # -- the background --
    def deliver_due(self, limit: int = 100) -> int:
        """Send up to `limit` pending alerts whose time has come; how many were delivered.

        After a sink's first failure in a pass its other alerts wait for the next pass:
        a receiver that is down gets one request per pass, not the whole backlog."""
        now = self._clock()
        delivered = tried = 0
        for configured in self._sinks():
            if tried >= limit:
                break
            for record in self._due(configured.sink.id, now, limit - tried):
                tried += 1
                try:
                    configured.sink.deliver(record.spec["alert"])
                except SinkError as exc:
                    self._failed(record, exc, now)
                    break
                self._delivered(record, now)
                delivered += 1
        if self._pruned_at is None or now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            self.prune(now - self._keep)
        return delivered

    def prune(self, before: dt.datetime) -> int:
        """Delete delivered alerts last updated before `before`; how many. Pending ones
        are never deleted."""
        removed = 0
        after: str | None = None
        while True:
            with self._store.read() as tx:
                page: list[GovernRecord] = tx.list_govern(
                    GovernFilter(type=ALERT, states=(DELIVERED,), after_id=after, limit=_PAGE)
                )
            old = [r.id for r in page if r.updated_at < before]
            if old:
                with self._store.transaction() as tx:
                    tx.delete_govern(ALERT, old)
                removed += len(old)
            if len(page) < _PAGE:
                return removed
            after = page[-1].id

    def pending(self) -> dict[str, int]:
        """Pending alerts per sink id (for `tether_alerts_pending`)."""
        with self._store.read() as tx:
            counts: Mapping[tuple[str, str], int] = tx.govern_counts(ALERT)
        return {sink: n for (sink, state), n in counts.items() if state == PENDING}

    def _due(self, sink_id: str, now: dt.datetime, limit: int) -> list[GovernRecord]:
        due: list[GovernRecord] = []
        after: str | None = None
        while len(due) < limit:
            with self._store.read() as tx:
                page: list[GovernRecord] = tx.list_govern(
                    GovernFilter(
                        type=ALERT,
                        group_id=sink_id,
                        states=(PENDING,),
                        after_id=after,
                        limit=_PAGE,
                    )
                )
            due += [r for r in page if parse_time(r.spec["next_attempt_at"]) <= now]
            if len(page) < _PAGE:
                break
            after = page[-1].id
        return due[:limit]

    def _delivered(self, record: GovernRecord, now: dt.datetime) -> None:
        spec = {**record.spec, "attempts": int(record.spec["attempts"]) + 1}
        spec["delivered_at"] = format_time(now)
        spec.pop("last_error", None)
        self._update(record, spec, DELIVERED, now)

    def _failed(self, record: GovernRecord, exc: SinkError, now: dt.datetime) -> None:
        attempts = int(record.spec["attempts"]) + 1
        wait = backoff(attempts, self._jitter())
        # SinkError messages name the sink and a status or an error class, nothing secret.
        log.warning(
            "alert %s not delivered to sink %s (attempt %d, next in %.0fs): %s",
            record.id,
            record.group_id,
            attempts,
            wait.total_seconds(),
            exc,
        )
        spec = {
            **record.spec,
            "attempts": attempts,
            "next_attempt_at": format_time(now + wait),
            "last_error": str(exc),
        }
        self._update(record, spec, PENDING, now)

    def _update(
        self, record: GovernRecord, spec: Mapping[str, Any], state: str, now: dt.datetime
    ) -> None:
        with self._store.transaction() as tx:
            current: GovernRecord | None = tx.get_govern(ALERT, record.id)
            # Only a pending alert changes: one another pass (a former leader) settled
            # already stays as it is.
            if current is None or current.state != PENDING:
                return
            tx.put_govern([replace(current, spec=dict(spec), state=state, updated_at=now)])


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class FindingGauges:
    """`tether_findings{rule,severity,state}` and `tether_alerts_pending{sink}`."""

    #: Every rule shows these states, at 0 when it has none, so a dashboard's series
    #: does not vanish when the last finding of a rule resolves.
    STATES = ("open", "excepted", "resolved")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.findings = Gauge(
            "tether_findings",
            "Findings by rule, severity and state",
            ["rule", "severity", "state"],
            registry=registry,
        )
        self.alerts_pending = Gauge(
            "tether_alerts_pending",
            "Alerts not yet delivered, per sink",
            ["sink"],
            registry=registry,
        )

    def set_from(
        self, counts: Mapping[tuple[str, str], int], severity_of: Mapping[str, str]
    ) -> None:
        """`counts` by (rule, state), as `Tx.govern_counts('finding')` returns them."""
        states = {rule: dict.fromkeys(self.STATES, 0) for rule in severity_of}
        for (rule, state), count in counts.items():
            states.setdefault(rule, dict.fromkeys(self.STATES, 0))[state] = count
        self.findings.clear()
        for rule, by_state in states.items():
            severity = severity_of.get(rule, "unknown")
            for state, count in by_state.items():
                self.findings.labels(rule=rule, severity=severity, state=state).set(count)

    def set_pending(self, pending: Mapping[str, int], sinks: Sequence[str] = ()) -> None:
        """Pending alerts per sink (`AlertOutbox.pending()`); `sinks` shown at 0 when
        they have none."""
        self.alerts_pending.clear()
        for sink in sinks:
            self.alerts_pending.labels(sink=sink).set(0)
        for sink, count in pending.items():
            self.alerts_pending.labels(sink=sink).set(count)
