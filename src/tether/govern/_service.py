"""Governance as one service: what the composition root wires and transports call.

Continuous: usage is flushed by every process; evaluation, session sampling, review due
dates, exception expiry and alert delivery run in the background on the one process
that leads (`tick`, behind the node's leadership gate). Changes are evaluated at once
for the identities they touch (an apply, a usage flush, a decision); the whole estate
again every `governance.evaluate_every`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tether._internal.timeutil import format_time, parse_time
from tether.audit import AuditLog
from tether.cluster import publish_govern_changed
from tether.estate import EstateView, EstateViewHolder
from tether.govern._engine import (
    EXPOSURE,
    FINDING,
    SUBJECT,
    USAGE_HORIZON,
    DraftLike,
    EngineParts,
    FindingsEngine,
    Outcome,
    PageDrafts,
    finding_id,
    finding_view,
    page_all,
    shadow_alert,
    shadow_event,
)
from tether.govern._exceptions import Exceptions
from tether.govern._report import FRAMEWORKS, build_report, migration_report
from tether.govern._reviews import Reviews
from tether.govern._usage import Rejected, UsageRecorder, combine, parse_usage_line, rollup_of
from tether.govern.errors import GovernError, InvalidUsage, UnknownGovernObject
from tether.lease import LeaseService
from tether.model import KEY_SERVICE_RULES, RULES, AuditEvent, Lease, Usage
from tether.static import StaticCredential
from tether.store import GovernFilter, GovernRecord, Store, Tx
from tether.targets import TargetSession

#: The finding of a found secret that no identity owns.
SHADOW_RULE = "shadow-nhi"
_SHADOW_LOCATIONS = 20

log = logging.getLogger("tether.govern")

#: Identities queued for re-evaluation; past this many, the next pass evaluates all.
_MAX_DIRTY = 10_000
#: After a start, how long before the first full evaluation (expiry and the request path
#: come first; the stored findings stand meanwhile).
FIRST_FULL_AFTER = dt.timedelta(seconds=60)
#: Most lines one POST /v1/usage takes.
MAX_USAGE_LINES = 10_000
#: Longest assignee of a finding (a person's email, a team, a ticket queue).
MAX_ASSIGNEE = 255


SampleSessions = Callable[
    [Mapping[str, Collection[str]]], tuple[Sequence[TargetSession], Mapping[str, str]]
]


class Alerts(Protocol):
    def enqueue(self, tx: Tx, alert: Mapping[str, Any]) -> None: ...
    def deliver_due(self, limit: int = 100) -> int: ...


@dataclass(frozen=True, slots=True)
class GovernParts:
    store: Store
    view: EstateViewHolder
    audit: AuditLog
    leases: LeaseService
    statics: Callable[[], list[StaticCredential]]
    clock: Callable[[], dt.datetime]
    sample_sessions: SampleSessions | None = None
    usable_users: Callable[[str, Collection[str]], set[str]] | None = None
    alerts: Alerts | None = None
    #: How often target sessions are sampled (pg_stat_activity, CLIENT LIST).
    sample_every: dt.timedelta = dt.timedelta(seconds=30)
    #: Findings raised elsewhere (tether.keys): see EngineParts.extra_drafts and
    #: EngineParts.unowned_drafts.
    extra_drafts: Callable[[], PageDrafts] | None = None
    unowned_drafts: Callable[[], Mapping[str, Sequence[DraftLike]]] | None = None
    #: The keys as the evidence report lists them (tether.keys' KeyService.summaries);
    #: None: the report has no keys section.
    key_summaries: Callable[[], Sequence[Mapping[str, Any]]] | None = None


@dataclass(frozen=True, slots=True)
class FindingFilter:
    rule: str | None = None
    severity: str | None = None
    owner: str | None = None
    state: str | None = None
    identity: str | None = None
    owner_in: tuple[str, ...] | None = None
    #: Only findings assigned to this (exactly); "" only the unassigned ones.
    assignee: str | None = None
    after: str | None = None
    limit: int = 1000


class Governance:
    def __init__(self, parts: GovernParts) -> None:
        self._p = parts
        self.usage = UsageRecorder(parts.store)
        alert = parts.alerts.enqueue if parts.alerts is not None else None
        self.engine = FindingsEngine(
            EngineParts(
                store=parts.store,
                view=parts.view,
                audit=parts.audit,
                clock=parts.clock,
                usable_users=parts.usable_users,
                alert=alert,
                extra_drafts=parts.extra_drafts,
                unowned_drafts=parts.unowned_drafts,
            )
        )
        self.exceptions = Exceptions(parts.store, parts.view, parts.audit, parts.clock, self.mark)
        self.reviews = Reviews(
            parts.store,
            parts.view,
            parts.audit,
            parts.leases,
            parts.clock,
            self.mark,
            alert,
        )
        self.reviews.flush_usage = self.usage.flush
        self.usage.on_flushed.append(self.mark)
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        # Findings outlive a restart: the first full pass waits for the node to settle
        # (`FIRST_FULL_AFTER`); an apply or new usage is evaluated at once meanwhile.
        self._all_due = False
        self._last_full: dt.datetime | None = None
        self._last_sample: dt.datetime | None = None
        self._last_tick: dt.datetime | None = None
        #: Called when there is work for the background (the worker's wake-up).
        self.on_work: list[Callable[[], None]] = []

    # -- what changed --
    def mark(self, identity_ids: Iterable[str]) -> None:
        with self._lock:
            self._dirty.update(identity_ids)
            if len(self._dirty) > _MAX_DIRTY:
                self._dirty.clear()
                self._all_due = True
        self._wake()

    def mark_all(self) -> None:
        with self._lock:
            self._all_due = True
        self._wake()

    def changed_elsewhere(self, event: Mapping[str, Any]) -> None:
        """The feed's `govern.changed` (any process), or an estate applied."""
        if event.get("all"):
            self.mark_all()
        else:
            self.mark(str(i) for i in event.get("identities", ()))

    def _wake(self) -> None:
        for wake in self.on_work:
            wake()

    # -- the background --
    def flush(self) -> None:
        """Every process: write the usage it buffered."""
        self.usage.flush()

    def tick(self) -> Outcome | None:
        """The leader's pass: sample, evaluate what is due, settle reviews and
        exceptions, deliver alerts."""
        now = self._p.clock()
        if self._p.sample_sessions is not None and (
            self._last_sample is None or now - self._last_sample >= self._p.sample_every
        ):
            self._last_sample = now
            self.sample_sessions()
            self.usage.flush()
        self.reviews.process_due()
        self.exceptions.expire_due()
        self._estate_waivers_expired(now)
        every = self._p.view.current.governance.evaluate_every
        if self._last_full is None:
            self._last_full = now - every + FIRST_FULL_AFTER
        with self._lock:
            full = self._all_due or now - self._last_full >= every
            dirty, self._dirty = self._dirty, set()
            self._all_due = False
        outcome: Outcome | None = None
        if full:
            outcome = self.engine.evaluate_all()
            self._last_full = now
            with self._p.store.transaction() as tx:
                tx.prune_usage((now - USAGE_HORIZON).date())
        elif dirty:
            outcome = self.engine.evaluate(dirty)
        if self._p.alerts is not None:
            self._p.alerts.deliver_due()
        return outcome

    def _estate_waivers_expired(self, now: dt.datetime) -> None:
        """Waivers of the estate that ran out since the last pass: their findings reopen
        now, not at the next full evaluation."""
        last, self._last_tick = self._last_tick, now
        if last is None:
            return
        for waiver in self._p.view.current.exceptions.values():
            if last < waiver.expires_at <= now:
                if waiver.identity == "*":
                    self.mark_all()
                else:
                    self.mark([waiver.identity])

    def evaluate_now(self, identity_ids: Iterable[str] | None = None) -> Outcome:
        """Evaluate at once (tests, `tether findings --refresh`); flushes usage first."""
        self.usage.flush()
        if identity_ids is None:
            outcome = self.engine.evaluate_all()
            self._last_full = self._p.clock()
            return outcome
        return self.engine.evaluate(identity_ids)

    # -- usage evidence --
    def record(self, usage: Usage) -> None:
        self.usage.record(usage)

    def ingest(self, lines: Sequence[Any]) -> dict[str, Any]:
        """POST /v1/usage: each line checked on its own; the good ones are kept."""
        if len(lines) > MAX_USAGE_LINES:
            raise InvalidUsage(f"(body): at most {MAX_USAGE_LINES} lines per request")
        now = self._p.clock()
        view = self._p.view.current
        statics = {c.id: c for c in self._p.statics()}
        accepted: list[Usage] = []
        rejected: list[Rejected] = []
        with self._p.store.read() as tx:

            def resolve(fingerprint: str) -> tuple[str, str] | None:
                if fingerprint.startswith("credential:"):
                    static = statics.get(fingerprint.removeprefix("credential:"))
                    if static is None or len(static.readers) != 1:
                        return None
                    return static.readers[0], ""
                lease = tx.get_lease(fingerprint)
                if lease is None:
                    return None
                return lease.identity_id, lease.profile_id or ""

            for index, line in enumerate(lines):
                try:
                    usage = parse_usage_line(
                        line,
                        now,
                        resolve_credential=resolve,
                        known_identity=lambda i: i in view.identities,
                    )
                except InvalidUsage as exc:
                    rejected.append(Rejected(index, str(exc)))
                    continue
                accepted.append(_with_entitlement(usage, view))
        if accepted:
            self.usage.write(combine(rollup_of(u) for u in accepted))
        return {"accepted": len(accepted), "rejected": [r.to_dict() for r in rejected]}

    def sample_sessions(self) -> int:
        """Sessions at every target, as usage of the identities behind them."""
        if self._p.sample_sessions is None:
            return 0
        statics = self._p.statics()
        by_user: dict[tuple[str, str], StaticCredential] = {}
        static_users: dict[str, set[str]] = {}
        for credential in statics:
            if credential.target and credential.users:
                for user in credential.users:
                    by_user[(credential.target, user)] = credential
                    static_users.setdefault(credential.target, set()).add(user)
        try:
            sessions, failures = self._p.sample_sessions(static_users)
        except GovernError:
            return 0
        for target, error in failures.items():
            log.warning("could not sample sessions", extra={"target": target, "error": error})
        now = self._p.clock()
        count = 0
        with self._p.store.read() as tx:
            for session in sessions:
                if session.lease_id:
                    lease = tx.get_lease(session.lease_id)
                    if lease is None:
                        continue
                    owners = [(lease.identity_id, lease.id, lease.profile_id or "")]
                else:
                    static = by_user.get((session.target, session.user))
                    if static is None:
                        continue
                    owners = [(r, f"credential:{static.id}", "") for r in static.readers]
                for identity_id, credential_key, entitlement in owners:
                    self.usage.record(
                        Usage(
                            identity_id=identity_id,
                            at=now,
                            action="session",
                            credential=credential_key,
                            entitlement=entitlement,
                            source=session.source,
                            resource=session.target,
                            application=session.application,
                        )
                    )
                    count += 1
        return count

    def exposed(self, tx: Tx, credential: StaticCredential, evidence: str, actor: str) -> None:
        """An exposure of a static secret was reported (in that report's transaction):
        the evidence of a leak finding on every identity that may read it."""
        spec = {"credential": credential.id, "evidence": evidence}
        self._exposure(tx, spec, credential.readers, actor)

    def exposed_lease(self, tx: Tx, lease: Lease, evidence: Mapping[str, Any], actor: str) -> None:
        """A leaked copy of a lease's credential was found (in that report's transaction):
        the evidence of a leak finding on its identity, revoked or not."""
        spec = {"credential": lease.id, "identity": lease.identity_id, "evidence": dict(evidence)}
        self._exposure(tx, spec, [lease.identity_id], actor, owner_id=lease.owner_id)

    def _exposure(
        self,
        tx: Tx,
        spec: Mapping[str, Any],
        identities: Sequence[str],
        actor: str,
        owner_id: str | None = None,
    ) -> None:
        """The leak evidence of these identities, and their re-evaluation once it commits."""
        now = self._p.clock()
        record = GovernRecord(
            type=EXPOSURE,
            id=f"exp_{secrets.token_hex(8)}",
            group_id=spec["credential"],
            state="reported",
            spec={**spec, "at": format_time(now), "reported_by": actor},
            updated_at=now,
            identity_id=spec.get("identity"),
            owner_id=owner_id,
        )
        tx.put_govern([record])
        publish_govern_changed(tx, identities)
        tx.on_commit(lambda: self.mark(identities))

    def shadow(self, tx: Tx, rule: str, evidence: Mapping[str, Any], actor: str) -> str:
        """A secret of a known provider that Tether does not manage (NHI2): one finding per
        secret (by fingerprint), with every location it was seen at. Not an identity's
        finding, so no evaluation resolves it: an operator does, once it is managed."""
        now = self._p.clock()
        fingerprint = str(evidence["fingerprint"])
        fid = finding_id(SHADOW_RULE, "", f"secret:{fingerprint}")
        old = tx.get_govern(FINDING, fid)
        locations = list(old.spec["evidence"].get("locations", [])) if old else []
        location = evidence.get("location")
        if location and location not in locations:
            locations = [*locations, location][-_SHADOW_LOCATIONS:]
        spec: dict[str, Any] = {
            "id": fid,
            "rule": SHADOW_RULE,
            "identity": None,
            "owner": None,
            "subject": f"secret:{fingerprint}",
            "first_seen": old.spec["first_seen"] if old else format_time(now),
            "last_seen": format_time(now),
            "evidence": {
                **{k: v for k, v in evidence.items() if k != "location"},
                "format": rule,
                "locations": locations,
            },
            "recommendation": "bring it under management (a static credential or a profile)"
            " and revoke it at its provider",
        }
        if old is not None and "assignee" in old.spec:
            spec["assignee"] = old.spec["assignee"]  # a new sighting keeps who is on it
        reopened = old is not None and old.state == "resolved"
        tx.put_govern(
            [
                GovernRecord(
                    type=FINDING,
                    id=fid,
                    group_id=SHADOW_RULE,
                    state="open",
                    spec=spec,
                    updated_at=now,
                )
            ]
        )
        if old is None or reopened:
            action = "finding.reopen" if reopened else "finding.open"
            self._p.audit.append(tx, [shadow_event(action, spec, actor)], now)
            if self._p.alerts is not None:
                self._p.alerts.enqueue(tx, shadow_alert(spec, action))
        return fid

    def resolve_shadow(self, tx: Tx, fingerprint: str, actor: str) -> None:
        """A secret once found unmanaged now matches a credential Tether manages."""
        fid = finding_id(SHADOW_RULE, "", f"secret:{fingerprint}")
        old = tx.get_govern(FINDING, fid)
        if old is None or old.state == "resolved":
            return
        now = self._p.clock()
        spec = {**old.spec, "resolved_at": format_time(now)}
        tx.put_govern([replace(old, state="resolved", spec=spec, updated_at=now)])
        self._p.audit.append(tx, [shadow_event("finding.resolve", spec, actor, "ok")], now)

    # -- assignment --
    def assign(
        self,
        finding_id: str,
        assignee: str,
        actor: str,
        owner_scope: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """Put a finding in someone's queue (`assignee`, e.g. a person's email; "" takes
        it out of every queue). A finding `owner_scope` may not see is unknown. The
        assignment is kept by re-evaluation (see FindingsEngine._merge) and audited
        (`finding.assign`) in the same transaction."""
        who = _assignee(assignee)
        now = self._p.clock()
        with self._p.store.transaction() as tx:
            old = tx.get_govern(FINDING, finding_id)
            if old is None or (owner_scope is not None and old.owner_id not in owner_scope):
                raise UnknownGovernObject(f"no finding {finding_id!r}")
            before = (old.spec.get("assignee") or {}).get("to")
            spec = {k: v for k, v in old.spec.items() if k != "assignee"}
            if who:
                spec["assignee"] = {"to": who, "by": actor, "at": format_time(now)}
            record = replace(old, spec=spec, updated_at=now)
            tx.put_govern([record])
            event = AuditEvent(
                action="finding.assign",
                actor=actor,
                identity_id=old.identity_id,
                owner_id=old.owner_id,
                reason=f"assigned to {who}" if who else "unassigned",
                details={
                    "finding": old.id,
                    "rule": old.group_id,
                    "assignee": who or None,
                    "previous": before,
                },
            )
            self._p.audit.append(tx, [event], now)
        return finding_view(record)

    # -- reading --
    def finding(
        self, finding_id: str, owner_scope: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        """One finding as GET /v1/findings shows it; one `owner_scope` may not see (or an
        unowned one, to an owner) is unknown."""
        with self._p.store.read() as tx:
            record = tx.get_govern(FINDING, finding_id)
        if record is None or (owner_scope is not None and record.owner_id not in owner_scope):
            raise UnknownGovernObject(f"no finding {finding_id!r}")
        return finding_view(record)

    def findings(self, where: FindingFilter) -> list[dict[str, Any]]:
        if where.rule is not None and where.rule not in RULES:
            raise InvalidUsage(f"rule: unknown rule {where.rule!r}")
        owner_in = where.owner_in
        if where.owner is not None:
            if owner_in is not None and where.owner not in owner_in:
                return []
            owner_in = (where.owner,)
        query = GovernFilter(
            type=FINDING,
            group_id=where.rule,
            identity_id=where.identity,
            owner_in=owner_in,
            states=(where.state,) if where.state else None,
            after_id=where.after,
            limit=where.limit,
        )
        out: list[dict[str, Any]] = []
        with self._p.store.read() as tx:
            while len(out) < where.limit:
                page = tx.list_govern(query)
                out += [
                    finding_view(r)
                    for r in page
                    if (
                        where.severity is None or RULES[r.group_id].severity.value == where.severity
                    )
                    and (where.assignee is None or _assigned_to(r) == where.assignee)
                ]
                if len(page) < query.limit:
                    break
                query = replace(query, after_id=page[-1].id)
        return out[: where.limit]

    def finding_counts(self) -> dict[tuple[str, str], int]:
        """Findings by (rule, state), for the Prometheus gauges."""
        with self._p.store.read() as tx:
            return tx.govern_counts(FINDING)

    def risk(self, identity_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = tuple(identity_ids)
        with self._p.store.read() as tx:
            records = page_all(tx, GovernFilter(type=SUBJECT, identity_ids=ids))
        return {
            r.id: {
                "score": r.spec.get("risk", 0),
                "open_findings": r.spec.get("open_findings", 0),
                "blast_radius": r.spec.get("blast_radius"),
            }
            for r in records
        }

    def risk_table(self) -> dict[str, tuple[int, int]]:
        """Every scored identity's (risk score, open findings), for a whole inventory."""
        with self._p.store.read() as tx:
            records = page_all(tx, GovernFilter(type=SUBJECT))
        return {
            r.id: (int(r.spec.get("risk", 0)), int(r.spec.get("open_findings", 0))) for r in records
        }

    def risk_ranking(self, owner_in: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
        with self._p.store.read() as tx:
            records = page_all(tx, GovernFilter(type=SUBJECT, owner_in=owner_in))
        return sorted(
            ((r.id, int(r.spec.get("risk", 0))) for r in records),
            key=lambda pair: (-pair[1], pair[0]),
        )

    def report(self, framework: str, since: dt.datetime) -> dict[str, Any]:
        if framework not in FRAMEWORKS:
            raise InvalidUsage(f"framework: must be one of {', '.join(FRAMEWORKS)}")
        keys = self._p.key_summaries() if self._p.key_summaries is not None else None
        return build_report(
            self._p.store.iter_audit(),
            self._p.view.current,
            framework=framework,
            since=since,
            now=self._p.clock(),
            keys=keys,
            key_findings=self._open_key_findings() if keys is not None else None,
        )

    def _open_key_findings(self) -> dict[str, int]:
        """Open findings by key name (their subject is `key:<name>`)."""
        counts: dict[str, int] = {}
        with self._p.store.read() as tx:
            for rule in sorted(KEY_SERVICE_RULES):
                where = GovernFilter(type=FINDING, group_id=rule, states=("open",))
                for record in page_all(tx, where):
                    subject = str(record.spec.get("subject", ""))
                    if subject.startswith("key:"):
                        name = subject.removeprefix("key:")
                        counts[name] = counts.get(name, 0) + 1
        return counts

    def migration(self) -> list[dict[str, Any]]:
        with self._p.store.read() as tx:
            exposures = page_all(tx, GovernFilter(type=EXPOSURE))
        counts: dict[str, int] = {}
        for record in exposures:
            counts[record.group_id] = counts.get(record.group_id, 0) + 1
        return migration_report(self._p.view.current, self._p.statics(), counts, self._p.clock())


def _assignee(value: object) -> str:
    """An assignee as given: stripped, at most MAX_ASSIGNEE characters, no control or
    format characters (they would forge or hide text where it is shown); "" unassigns."""
    if not isinstance(value, str):
        raise InvalidUsage("assignee: must be a string")
    text = value.strip()
    if len(text) > MAX_ASSIGNEE:
        raise InvalidUsage(f"assignee: at most {MAX_ASSIGNEE} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise InvalidUsage("assignee: must not contain control characters")
    return text


def _assigned_to(record: GovernRecord) -> str:
    assignee = record.spec.get("assignee")
    return str(assignee.get("to", "")) if isinstance(assignee, Mapping) else ""


def _with_entitlement(usage: Usage, view: EstateView) -> Usage:
    """A reported use names a resource, not a profile: the entitlement it was under is
    the identity's profile with that audience, id or target."""
    if usage.entitlement or not usage.resource:
        return usage
    identity = view.identities.get(usage.identity_id)
    if identity is None:
        return usage
    for entitlement in identity.entitlements:
        profile = view.profiles.get(entitlement.profile_id)
        if profile is not None and usage.resource in (profile.audience, profile.id, profile.target):
            return replace(usage, entitlement=profile.id)
    return usage


def parse_since(value: str | None, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now - dt.timedelta(days=90)
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidUsage(f"since: {exc}") from None


__all__ = ["FindingFilter", "GovernParts", "Governance", "UnknownGovernObject", "parse_since"]
