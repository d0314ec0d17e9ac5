"""Decisions audited without a chain entry per decision (invariant 5, at PDP volume).

As with confidentiality keys' use (`key.usage`, tether.keys._usage), decisions are tallied
in memory and written out by a background pass: one `authzen.decisions` entry per
application and caller per window (`audit.summary_every`, 1m by default) with the counts
of permits and denies per action, the searches made, and a uniform sample of denies
(`audit.deny_samples`, 10 by default) and of permits (`audit.permit_samples`, 0). A sample
names the subject, action, resource and the deciding policies, never the properties or
context the PEP sent. A failed write keeps the tallies for the next pass.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_time
from tether.authzen._model import AuditSettings, Evaluation, Verdict
from tether.model import AuditEvent

AUDIT_ACTION = "authzen.decisions"
#: Distinct action names counted per window; the rest are counted as OTHER (a caller
#: sending a million names must not grow memory).
MAX_ACTIONS = 256
OTHER = "(other)"

_Key = tuple[str, str]  # (application, actor)


@dataclass(slots=True)
class _Sample:
    """A reservoir: a uniform sample of up to `size` of the `seen` items offered."""

    size: int
    seen: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)

    def offer(self, make: Any, rng: random.Random) -> None:
        self.seen += 1
        if self.size <= 0:
            return
        if len(self.items) < self.size:
            self.items.append(make())
        else:
            slot = rng.randrange(self.seen)
            if slot < self.size:
                self.items[slot] = make()

    def merge(self, other: _Sample, rng: random.Random) -> None:
        for item in other.items:
            self.offer(lambda item=item: item, rng)
        self.seen += max(0, other.seen - len(other.items))


@dataclass(slots=True)
class _Window:
    opened: dt.datetime
    first: dt.datetime
    last: dt.datetime
    every: dt.timedelta
    by_action: dict[str, list[int]] = field(default_factory=dict)
    searches: dict[str, int] = field(default_factory=dict)
    denies: _Sample = field(default_factory=lambda: _Sample(0))
    permits: _Sample = field(default_factory=lambda: _Sample(0))

    def details(self, application: str) -> dict[str, Any]:
        permits = sum(c[0] for c in self.by_action.values())
        denies = sum(c[1] for c in self.by_action.values())
        out: dict[str, Any] = {
            "application": application,
            "first": format_time(self.first),
            "last": format_time(self.last),
            "decisions": permits + denies,
            "permits": permits,
            "denies": denies,
            "by_action": {
                a: {"permit": c[0], "deny": c[1]} for a, c in sorted(self.by_action.items())
            },
        }
        if self.searches:
            out["searches"] = dict(sorted(self.searches.items()))
        if self.denies.items:
            out["deny_samples"] = self.denies.items
        if self.permits.items:
            out["permit_samples"] = self.permits.items
        return out


def _sample(evaluation: Evaluation, verdict: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": {"type": evaluation.subject.type, "id": evaluation.subject.id},
        "action": evaluation.action.name,
        "resource": {"type": evaluation.resource.type, "id": evaluation.resource.id},
    }
    if verdict.policy_ids:
        out["policies"] = list(verdict.policy_ids)
    if verdict.reasons:
        out["reason"] = verdict.reasons[0][:500]
    return out


class DecisionTally:
    """Per-process tallies of decisions, drained into summary entries by `due`."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._lock = threading.Lock()
        self._windows: dict[_Key, _Window] = {}
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not secrecy

    def _window(self, key: _Key, settings: AuditSettings, at: dt.datetime) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(
                at,
                at,
                at,
                settings.summary_every,
                denies=_Sample(settings.deny_samples),
                permits=_Sample(settings.permit_samples),
            )
        return window

    def add(
        self,
        application: str,
        actor: str,
        settings: AuditSettings,
        evaluations: Sequence[Evaluation],
        verdicts: Sequence[Verdict],
        at: dt.datetime,
    ) -> None:
        with self._lock:
            window = self._window((application, actor), settings, at)
            window.last = at
            for evaluation, verdict in zip(evaluations, verdicts, strict=False):
                name = evaluation.action.name
                counts = window.by_action.get(name)
                if counts is None:
                    if len(window.by_action) >= MAX_ACTIONS:
                        name = OTHER
                    counts = window.by_action.setdefault(name, [0, 0])
                counts[0 if verdict.decision else 1] += 1
                sample = window.permits if verdict.decision else window.denies
                sample.offer(lambda e=evaluation, v=verdict: _sample(e, v), self._rng)

    def searched(
        self, application: str, actor: str, settings: AuditSettings, kind: str, at: dt.datetime
    ) -> None:
        with self._lock:
            window = self._window((application, actor), settings, at)
            window.last = at
            window.searches[kind] = window.searches.get(kind, 0) + 1

    def due(self, now: dt.datetime, force: bool = False) -> dict[_Key, _Window]:
        """Take the windows that are over (all of them with `force`)."""
        with self._lock:
            taken = {k: w for k, w in self._windows.items() if force or now - w.opened >= w.every}
            for key in taken:
                del self._windows[key]
            return taken

    def restore(self, windows: dict[_Key, _Window]) -> None:
        """Put windows back whose entries could not be written."""
        with self._lock:
            for key, window in windows.items():
                held = self._windows.get(key)
                if held is None:
                    self._windows[key] = window
                    continue
                held.opened = min(held.opened, window.opened)
                held.first = min(held.first, window.first)
                for name, counts in window.by_action.items():
                    mine = held.by_action.setdefault(name, [0, 0])
                    mine[0] += counts[0]
                    mine[1] += counts[1]
                for kind, n in window.searches.items():
                    held.searches[kind] = held.searches.get(kind, 0) + n
                held.denies.merge(window.denies, self._rng)
                held.permits.merge(window.permits, self._rng)

    def pending(self) -> int:
        with self._lock:
            return len(self._windows)


def summary_events(windows: dict[_Key, _Window]) -> list[AuditEvent]:
    events = []
    for (application, actor), window in sorted(windows.items()):
        details = window.details(application)
        events.append(
            AuditEvent(
                action=AUDIT_ACTION,
                actor=actor,
                result="ok",
                reason=f"{details['permits']} permitted, {details['denies']} denied",
                details=details,
            )
        )
    return events
