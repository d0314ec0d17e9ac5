"""The findings engine: gathers facts, runs the rules, and keeps each finding's state.

A finding is one (rule, identity, subject), its id derived from those, so evaluating
again updates it instead of adding another. Its state moves open → resolved when the
rule no longer raises it, open ↔ excepted while a waiver covers it, and back to open
when it recurs or its waiver expires; every move is an audit entry (the evidence the
report counts) and an opening raises an alert.

Memory: a full evaluation walks the identities a page at a time with that page's
rollups and findings; across pages it keeps only compact per-identity facts (the leases
that can raise a finding, the static secrets) — never every lease or rollup at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tether._internal.timeutil import format_time, parse_time
from tether.audit import AuditLog
from tether.errors import TetherError
from tether.estate import EstateView, EstateViewHolder
from tether.govern._risk import blast_radius, risk_score
from tether.govern._rules import DELEGATION_CHAIN_LONG, Draft, Facts, evaluate
from tether.model import (
    RULES,
    AuditEvent,
    Identity,
    IdentityStatus,
    Lease,
    LeaseState,
    Severity,
    Waiver,
)
from tether.static import StaticCredential
from tether.store import (
    GovernFilter,
    GovernRecord,
    LeaseFilter,
    Store,
    SuspectLeases,
    Tx,
    UsageRollup,
)
from tether.targets import kind_names

log = logging.getLogger("tether.govern")

FINDING = "finding"
SUBJECT = "subject"
EXCEPTION = "exception"
EXPOSURE = "exposure"
#: How far back usage is read (and kept: older rollups are pruned).
USAGE_HORIZON = dt.timedelta(days=400)
#: Exposures count as leaks this long after they were reported.
EXPOSURE_WINDOW = dt.timedelta(days=30)
_PAGE = 1000
_ACTOR = "system:govern"
_LIVE_OR_REVOKING = (LeaseState.PENDING, LeaseState.ACTIVE, LeaseState.REVOKING)


class DraftLike(Protocol):
    """A finding candidate from elsewhere (a tether.keys KeyFinding): what a Draft has."""

    @property
    def rule(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def evidence(self) -> Mapping[str, Any]: ...
    @property
    def recommendation(self) -> str | None: ...


#: A page's drafts from elsewhere: identity ids -> identity id -> its drafts.
PageDrafts = Callable[[Sequence[str]], Mapping[str, Sequence[DraftLike]]]


def _draft(candidate: DraftLike) -> Draft:
    if candidate.rule not in RULES:
        raise KeyError(f"a draft of an unknown rule {candidate.rule!r}")
    return Draft(
        candidate.rule, candidate.subject, dict(candidate.evidence), candidate.recommendation
    )


def finding_id(rule: str, identity_id: str, subject: str) -> str:
    digest = hashlib.sha256(f"{rule}\x00{identity_id}\x00{subject}".encode()).hexdigest()
    return f"fnd_{digest[:24]}"


@dataclass(frozen=True, slots=True)
class EngineParts:
    store: Store
    view: EstateViewHolder
    audit: AuditLog
    clock: Callable[[], dt.datetime]
    #: Which of these users still log in at a target (tether.targets), for the
    #: retired-but-usable rule; None where no target registry is wired.
    usable_users: Callable[[str, Collection[str]], set[str]] | None = None
    #: Puts an alert in the outbox, in the transaction that raised it.
    alert: Callable[[Tx, Mapping[str, Any]], None] | None = None
    #: Drafts raised outside these rules (the key service's findings on its keys'
    #: encryption_key identities): called once per evaluation, it gives the source of a
    #: page's drafts (identity ids -> identity id -> drafts), merged with the rules' own,
    #: so state, waivers, audit entries, alerts and risk are the same.
    extra_drafts: Callable[[], PageDrafts] | None = None
    #: Findings no identity owns (a principal's key-role-conflict), by rule, settled in
    #: every full evaluation: each rule it names opens what it drafts and resolves its
    #: findings it no longer drafts.
    unowned_drafts: Callable[[], Mapping[str, Sequence[DraftLike]]] | None = None


@dataclass(slots=True)
class Outcome:
    """What one evaluation did."""

    identities: int = 0
    opened: int = 0
    resolved: int = 0
    excepted: int = 0
    reopened: int = 0
    open_total: int = 0

    def add(self, other: Outcome) -> None:
        for name in ("identities", "opened", "resolved", "excepted", "reopened", "open_total"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("identities", "opened", "resolved", "excepted", "reopened", "open_total")
        }


@dataclass(frozen=True, slots=True)
class _Shared:
    """Facts about the estate as a whole, gathered once per evaluation."""

    view: EstateView
    now: dt.datetime
    statics_by_reader: Mapping[str, tuple[StaticCredential, ...]]
    static_environments: Mapping[str, frozenset[str]]
    dynamic_targets: frozenset[str]
    exposures_by_credential: Mapping[str, tuple[Mapping[str, Any], ...]]
    #: Exposures of leases (which end at once, so are no longer live): by identity.
    exposures_by_identity: Mapping[str, tuple[Mapping[str, Any], ...]]
    waivers: tuple[Waiver, ...]
    issuer_presets: Mapping[str, str]
    interactive: Callable[[str], bool]
    #: Per identity: the departed people whose `may_act` still names it.
    departed_principals: Mapping[str, tuple[str, ...]]
    #: For a full run: each identity's leases that can raise a finding (None: query).
    leases: Mapping[str, list[Lease]] | None = None
    #: This evaluation's source of drafts from elsewhere (EngineParts.extra_drafts).
    page_drafts: PageDrafts | None = None


class FindingsEngine:
    def __init__(self, parts: EngineParts) -> None:
        self._p = parts
        # One evaluation at a time in a process: two would each open the same finding
        # (one audit entry and one alert each). Across processes the leadership gate
        # keeps the background to one; an operator's evaluate runs on its own node.
        self._running = threading.Lock()
        #: Called after each evaluation's writes commit, with what changed.
        self.on_evaluated: list[Callable[[Outcome], None]] = []

    # -- entry points --
    def evaluate_all(self) -> Outcome:
        """Every identity of the estate, a page at a time."""
        with self._running:
            return self._evaluate_all()

    def _evaluate_all(self) -> Outcome:
        shared = self._shared(full=True)
        ids = sorted(shared.view.identities)
        total = Outcome()
        for start in range(0, len(ids), _PAGE):
            total.add(self._evaluate_page(shared, ids[start : start + _PAGE]))
        if self._p.unowned_drafts is not None:
            total.add(self._settle_unowned(shared, self._p.unowned_drafts()))
        for listener in self.on_evaluated:
            listener(total)
        return total

    def evaluate(self, identity_ids: Iterable[str]) -> Outcome:
        """These identities only (an estate change, new usage, a decision)."""
        with self._running:
            return self._evaluate(identity_ids)

    def _evaluate(self, identity_ids: Iterable[str]) -> Outcome:
        shared = self._shared(full=False)
        wanted = sorted(set(identity_ids))
        known = [i for i in wanted if i in shared.view.identities]
        total = Outcome()
        for start in range(0, len(known), _PAGE):
            total.add(self._evaluate_page(shared, known[start : start + _PAGE]))
        gone = set(wanted) - set(known)
        if gone:
            total.add(self._resolve_ids(shared, sorted(gone)))
        for listener in self.on_evaluated:
            listener(total)
        return total

    # -- facts --
    def _shared(self, *, full: bool) -> _Shared:
        view = self._p.view.current
        now = self._p.clock()
        with self._p.store.read() as tx:
            statics = [
                StaticCredential.from_spec(s) for s in tx.estate_objects("credential").values()
            ]
            exposures = page_all(tx, GovernFilter(type=EXPOSURE))
            api_waivers = page_all(tx, GovernFilter(type=EXCEPTION, states=("active",)))
            leases = _suspect_leases(tx, view, now, None) if full else None
        by_reader: dict[str, list[StaticCredential]] = {}
        environments: dict[str, frozenset[str]] = {}
        for credential in statics:
            for reader in credential.readers:
                by_reader.setdefault(reader, []).append(credential)
            environments[credential.id] = frozenset(
                view.identities[r].environment for r in credential.readers if r in view.identities
            )
        by_credential: dict[str, list[Mapping[str, Any]]] = {}
        by_identity: dict[str, list[Mapping[str, Any]]] = {}
        for record in exposures:
            at = parse_time(record.spec["at"])
            if at <= now - EXPOSURE_WINDOW:
                continue
            if record.spec.get("identity"):
                by_identity.setdefault(record.spec["identity"], []).append(record.spec)
            else:
                by_credential.setdefault(record.spec["credential"], []).append(record.spec)
        settings = view.governance
        prefixes = tuple(settings.interactive_applications)
        waivers = tuple(view.exceptions.values()) + tuple(
            Waiver.from_spec(r.spec) for r in api_waivers
        )
        departed: dict[str, list[str]] = {}
        for person in sorted(view.people.values(), key=lambda p: p.id):
            if not person.active:
                for actor in dict.fromkeys(person.may_act):
                    departed.setdefault(actor, []).append(person.id)
        return _Shared(
            view=view,
            now=now,
            statics_by_reader={k: tuple(v) for k, v in by_reader.items()},
            static_environments=environments,
            dynamic_targets=frozenset(
                p.target for p in view.profiles.values() if p.target and p.provider in kind_names()
            ),
            exposures_by_credential={k: tuple(v) for k, v in by_credential.items()},
            exposures_by_identity={k: tuple(v) for k, v in by_identity.items()},
            waivers=waivers,
            issuer_presets={i.id: i.preset for i in view.issuers.values()},
            interactive=lambda value: value.startswith(prefixes),
            departed_principals={k: tuple(v) for k, v in departed.items()},
            leases=leases,
            page_drafts=self._p.extra_drafts() if self._p.extra_drafts is not None else None,
        )

    def _facts(
        self,
        shared: _Shared,
        identity: Identity,
        usage: Sequence[UsageRollup],
        leases: Sequence[Lease],
        subject: GovernRecord | None,
    ) -> Facts:
        view, now = shared.view, shared.now
        statics = shared.statics_by_reader.get(identity.id, ())
        tracked = subject.spec.get("tracked_since") if subject else None
        reviewed = subject.spec.get("reviewed_at") if subject else None
        usable: frozenset[str] = frozenset()
        if identity.status is IdentityStatus.RETIRED and self._p.usable_users is not None:
            usable = self._usable(statics)
        exposures = [
            {**exposure, "credential": exposure["credential"]}
            for credential in statics
            for exposure in shared.exposures_by_credential.get(credential.id, ())
        ] + list(shared.exposures_by_identity.get(identity.id, ()))
        return Facts(
            identity=identity,
            owner=view.owners.get(identity.owner_id),
            vendor=view.vendors.get(identity.vendor_id or ""),
            control=view.control(identity.kind),
            thresholds=view.governance.thresholds(identity.kind),
            settings=view.governance,
            profiles=view.profiles,
            issuer_presets=shared.issuer_presets,
            usage=usage,
            leases=leases,
            statics=statics,
            static_environments=shared.static_environments,
            dynamic_targets=shared.dynamic_targets,
            usable_statics=usable,
            exposures=exposures,
            # Watched since governance first saw it, or since its earliest usage evidence
            # (reported usage from older audit logs counts: it was observed then).
            tracked_since=min(
                parse_time(tracked) if tracked else now,
                min((r.first_seen for r in usage), default=now),
            ),
            reviewed_at=parse_time(reviewed) if reviewed else None,
            now=now,
            interactive=shared.interactive,
            departed_principals=shared.departed_principals.get(identity.id, ()),
        )

    def _usable(self, statics: Sequence[StaticCredential]) -> frozenset[str]:
        assert self._p.usable_users is not None
        working: set[str] = set()
        for credential in statics:
            if not credential.target or not credential.users:
                continue
            try:
                if self._p.usable_users(credential.target, credential.users):
                    working.add(credential.id)
            except (TetherError, KeyError) as exc:
                log.warning(
                    "could not check a static secret's users",
                    extra={"credential": credential.id, "error": type(exc).__name__},
                )
        return frozenset(working)

    # -- one page --
    def _evaluate_page(self, shared: _Shared, ids: Sequence[str]) -> Outcome:
        view, now = shared.view, shared.now
        since = (now - USAGE_HORIZON).date()
        with self._p.store.read() as tx:
            rollups = tx.usage_for(ids, since)
            subjects = {
                r.id: r for r in page_all(tx, GovernFilter(type=SUBJECT, identity_ids=tuple(ids)))
            }
            existing = page_all(tx, GovernFilter(type=FINDING, identity_ids=tuple(ids)))
            found = _suspect_leases(tx, view, now, ids) if shared.leases is None else shared.leases
            leases = {i: found.get(i, []) for i in ids}
        usage_by: dict[str, list[UsageRollup]] = {}
        for rollup in rollups:
            usage_by.setdefault(rollup.identity_id, []).append(rollup)
        by_identity: dict[str, list[GovernRecord]] = {}
        for record in existing:
            by_identity.setdefault(record.identity_id or "", []).append(record)
        extra = shared.page_drafts(ids) if shared.page_drafts is not None else {}

        writes: list[GovernRecord] = []
        events: list[AuditEvent] = []
        alerts: list[Mapping[str, Any]] = []
        outcome = Outcome(identities=len(ids))
        for identity_id in ids:
            identity = view.identities[identity_id]
            subject = subjects.get(identity_id)
            facts = self._facts(
                shared, identity, usage_by.get(identity_id, ()), leases[identity_id], subject
            )
            drafts = evaluate(facts) + [_draft(c) for c in extra.get(identity_id, ())]
            changed, open_severities = self._merge(
                shared, identity, drafts, by_identity.get(identity_id, []), outcome, events, alerts
            )
            writes += changed
            # Delegated actors as usage saw them: the same in a full and an incremental run.
            radius = blast_radius(identity, view.profiles, facts.facet("actor"))
            score = risk_score(open_severities, identity.criticality, radius)
            spec = {
                "owner": identity.owner_id,
                "tracked_since": format_time(facts.tracked_since),
                "reviewed_at": format_time(facts.reviewed_at) if facts.reviewed_at else None,
                "risk": score,
                "open_findings": len(open_severities),
                "blast_radius": radius.to_dict(),
            }
            if subject is None or _differs(subject.spec, spec):
                writes.append(
                    GovernRecord(
                        type=SUBJECT,
                        id=identity_id,
                        group_id="",
                        state="tracked",
                        spec=spec,
                        updated_at=now,
                        identity_id=identity_id,
                        owner_id=identity.owner_id,
                    )
                )
        self._commit(writes, events, alerts, now)
        return outcome

    def _commit(
        self,
        writes: Sequence[GovernRecord],
        events: Sequence[AuditEvent],
        alerts: Sequence[Mapping[str, Any]],
        now: dt.datetime,
    ) -> None:
        """One evaluation step's records, audit entries and alerts, in one transaction."""
        if writes or events:
            with self._p.store.transaction() as tx:
                tx.put_govern(_keep_people_fields(tx, writes))
                self._p.audit.append(tx, events, now)
                if self._p.alert is not None:
                    for alert in alerts:
                        self._p.alert(tx, alert)

    def _merge(
        self,
        shared: _Shared,
        identity: Identity,
        drafts: Sequence[Draft],
        existing: Sequence[GovernRecord],
        outcome: Outcome,
        events: list[AuditEvent],
        alerts: list[Mapping[str, Any]],
    ) -> tuple[list[GovernRecord], list[Severity]]:
        now = shared.now
        held = {record.id: record for record in existing}
        writes: list[GovernRecord] = []
        severities: list[Severity] = []
        seen: set[str] = set()
        for draft in drafts:
            fid = finding_id(draft.rule, identity.id, draft.subject)
            if fid in seen:
                continue
            seen.add(fid)
            rule = RULES[draft.rule]
            waiver = _waiver_for(shared, draft, identity, now)
            state = "excepted" if waiver is not None else "open"
            old = held.get(fid)
            spec = _draft_spec(fid, draft, identity, state, waiver, now)
            if state == "open":
                severities.append(rule.severity)
            action: str | None
            if old is None:
                action = "finding.open" if state == "open" else "finding.excepted"
                outcome.opened += state == "open"
                outcome.excepted += state == "excepted"
            else:
                spec["first_seen"] = old.spec.get("first_seen", spec["first_seen"])
                spec.update(carried_over(old.spec))
                action = _transition(old.state, state)
                if action is None and not _stale(old, spec, now):
                    if state == "open":
                        outcome.open_total += 1
                    continue
                if action == "finding.reopen":
                    outcome.reopened += 1
                    spec["reopened_at"] = format_time(now)
                elif action == "finding.excepted":
                    outcome.excepted += 1
            if state == "open":
                outcome.open_total += 1
            writes.append(_record(spec, identity, state, now))
            if action is not None:
                events.append(_finding_event(action, spec, identity))
                if action in ("finding.open", "finding.reopen"):
                    alerts.append(_alert(spec, action))
        for fid, old in held.items():
            if fid in seen or old.state == "resolved":
                continue
            spec = {**old.spec, "owner": identity.owner_id, "resolved_at": format_time(now)}
            writes.append(_record(spec, identity, "resolved", now))
            events.append(_finding_event("finding.resolve", spec, identity))
            outcome.resolved += 1
        return writes, severities

    def _settle_unowned(
        self, shared: _Shared, by_rule: Mapping[str, Sequence[DraftLike]]
    ) -> Outcome:
        """Findings no identity owns, of the rules `by_rule` names: each draft opens (or
        reopens) its finding, and a finding of those rules not drafted resolves. As a
        shadow NHI's, they have no identity, owner or waiver."""
        now = shared.now
        outcome = Outcome()
        with self._p.store.read() as tx:
            held = {
                r.id: r
                for rule in sorted(by_rule)
                for r in page_all(tx, GovernFilter(type=FINDING, group_id=rule))
                if r.identity_id is None
            }
        writes: list[GovernRecord] = []
        events: list[AuditEvent] = []
        alerts: list[Mapping[str, Any]] = []
        seen: set[str] = set()
        for rule in sorted(by_rule):
            for draft in (_draft(c) for c in by_rule[rule]):
                if draft.rule != rule:
                    raise KeyError(f"a draft of rule {draft.rule!r} given as one of {rule!r}")
                fid = finding_id(rule, "", draft.subject)
                if fid in seen:
                    continue
                seen.add(fid)
                old = held.get(fid)
                spec: dict[str, Any] = {
                    "id": fid,
                    "rule": rule,
                    "identity": None,
                    "owner": None,
                    "subject": draft.subject,
                    "first_seen": old.spec.get("first_seen") if old else format_time(now),
                    "last_seen": format_time(now),
                    "evidence": dict(draft.evidence),
                }
                if draft.recommendation:
                    spec["recommendation"] = draft.recommendation
                spec.update(carried_over(old.spec if old is not None else {}))
                action = "finding.open" if old is None else _transition(old.state, "open")
                if action is None and old is not None and not _stale(old, spec, now):
                    outcome.open_total += 1
                    continue
                if action == "finding.open":
                    outcome.opened += 1
                elif action == "finding.reopen":
                    outcome.reopened += 1
                    spec["reopened_at"] = format_time(now)
                outcome.open_total += 1
                writes.append(
                    GovernRecord(
                        type=FINDING, id=fid, group_id=rule, state="open", spec=spec, updated_at=now
                    )
                )
                if action is not None:
                    events.append(shadow_event(action, spec, _ACTOR))
                    alerts.append(_alert(spec, action))
        for fid, old in held.items():
            if fid in seen or old.state == "resolved":
                continue
            spec = {**old.spec, "resolved_at": format_time(now)}
            writes.append(replace(old, state="resolved", spec=spec, updated_at=now))
            events.append(shadow_event("finding.resolve", spec, _ACTOR, "ok"))
            outcome.resolved += 1
        self._commit(writes, events, alerts, now)
        return outcome

    def _resolve_ids(self, shared: _Shared, ids: Sequence[str]) -> Outcome:
        """Identities no longer in the estate: their findings resolve."""
        outcome = Outcome()
        with self._p.store.read() as tx:
            existing = page_all(tx, GovernFilter(type=FINDING, identity_ids=tuple(ids)))
        writes, events = [], []
        for old in existing:
            if old.state == "resolved":
                continue
            spec = {**old.spec, "resolved_at": format_time(shared.now)}
            writes.append(replace(old, state="resolved", spec=spec, updated_at=shared.now))
            events.append(
                AuditEvent(
                    action="finding.resolve",
                    actor="system:govern",
                    identity_id=old.identity_id,
                    owner_id=old.owner_id,
                    reason="identity no longer in the estate",
                    details=_finding_details(spec),
                )
            )
            outcome.resolved += 1
        if writes:
            with self._p.store.transaction() as tx:
                tx.put_govern(writes)
                self._p.audit.append(tx, events, shared.now)
        return outcome


def _draft_spec(
    fid: str,
    draft: Draft,
    identity: Identity,
    state: str,
    waiver: Waiver | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """What is stored of a finding: what the rule does not say (its title, severity and
    mappings are the rule's, its state is the record's: see `finding_view`)."""
    spec: dict[str, Any] = {
        "id": fid,
        "rule": draft.rule,
        "identity": identity.id,
        "owner": identity.owner_id,
        "subject": draft.subject,
        "first_seen": format_time(now),
        "last_seen": format_time(now),
        "evidence": dict(draft.evidence),
    }
    if draft.recommendation:
        spec["recommendation"] = draft.recommendation
    if waiver is not None:
        spec["exception"] = {"id": waiver.id, "expires": format_time(waiver.expires_at)}
    return spec


#: What a finding keeps when it is drafted again: what people set on it, not the rules.
CARRIED_OVER = ("assignee",)


def carried_over(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a stored finding's spec a re-evaluation keeps (its assignee)."""
    return {k: spec[k] for k in CARRIED_OVER if k in spec}


def _keep_people_fields(tx: Tx, writes: Sequence[GovernRecord]) -> list[GovernRecord]:
    """`writes` with each finding's people fields (its assignee) as stored now, read in
    the writing transaction: an assignment made while the engine was evaluating (after
    its read) is not overwritten by what it read."""
    # A finding first seen in this evaluation was not there to be assigned.
    identities = tuple(
        {
            w.identity_id
            for w in writes
            if w.type == FINDING
            and w.identity_id
            and w.spec.get("first_seen") != format_time(w.updated_at)
        }
    )
    if not identities:
        return list(writes)
    stored = {
        r.id: carried_over(r.spec)
        for r in page_all(tx, GovernFilter(type=FINDING, identity_ids=identities))
    }
    return [
        replace(
            w,
            spec={**{k: v for k, v in w.spec.items() if k not in CARRIED_OVER}, **stored[w.id]},
        )
        if w.type == FINDING and w.id in stored
        else w
        for w in writes
    ]


def finding_view(record: GovernRecord) -> dict[str, Any]:
    """A stored finding as the API gives it (the contract of GET /v1/findings)."""
    return _shown(record.spec, record.state)


def _shown(spec: Mapping[str, Any], state: str) -> dict[str, Any]:
    rule = RULES[spec["rule"]]
    return {
        "id": spec["id"],
        "rule": rule.id,
        "title": rule.title,
        "severity": rule.severity.value,
        "owasp_nhi": list(rule.owasp_nhi),
        "nist_csf": list(rule.nist_csf),
        "identity": spec["identity"],
        "owner": spec["owner"],
        "state": state,
        **{k: v for k, v in spec.items() if k not in ("id", "rule", "identity", "owner")},
    }


def _transition(old: str, new: str) -> str | None:
    if old == new:
        return None
    if new == "excepted":
        return "finding.excepted"
    return "finding.reopen"


def _stale(old: GovernRecord, spec: Mapping[str, Any], now: dt.datetime) -> bool:
    """Whether a standing finding should be written again: its evidence changed, or its
    last_seen is over a minute old (so a busy incremental loop does not rewrite it)."""
    if old.spec.get("evidence") != spec.get("evidence"):
        return True
    if old.spec.get("exception") != spec.get("exception"):
        return True
    if old.owner_id != spec.get("owner"):
        return True  # handed to another owner: its scope must follow at once
    last = old.spec.get("last_seen")
    return last is None or parse_time(last) <= now - dt.timedelta(minutes=1)


def _differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())


def _record(spec: dict[str, Any], identity: Identity, state: str, now: dt.datetime) -> GovernRecord:
    return GovernRecord(
        type=FINDING,
        id=spec["id"],
        group_id=spec["rule"],
        state=state,
        spec=spec,
        updated_at=now,
        identity_id=identity.id,
        owner_id=identity.owner_id,
    )


def _finding_details(spec: Mapping[str, Any]) -> dict[str, Any]:
    rule = RULES[spec["rule"]]
    return {
        "finding": spec["id"],
        "rule": rule.id,
        "severity": rule.severity.value,
        "owasp_nhi": list(rule.owasp_nhi),
        "nist_csf": list(rule.nist_csf),
        "subject": spec.get("subject", ""),
        "exception": (spec.get("exception") or {}).get("id"),
    }


def _finding_event(action: str, spec: Mapping[str, Any], identity: Identity) -> AuditEvent:
    return AuditEvent(
        action=action,
        actor="system:govern",
        result="alert" if action in ("finding.open", "finding.reopen") else "ok",
        identity_id=identity.id,
        owner_id=identity.owner_id,
        justification=identity.justification,
        reason=RULES[spec["rule"]].title,
        details=_finding_details(spec),
    )


def shadow_event(
    action: str, spec: Mapping[str, Any], actor: str, result: str = "alert"
) -> AuditEvent:
    """The audit entry of a finding no identity owns (a shadow NHI)."""
    return AuditEvent(
        action=action,
        actor=actor,
        result=result,
        reason=RULES[spec["rule"]].title,
        details=_finding_details(spec),
    )


def shadow_alert(spec: Mapping[str, Any], action: str) -> dict[str, Any]:
    return _alert(spec, action)


def _alert(spec: Mapping[str, Any], action: str) -> dict[str, Any]:
    shown = _shown(spec, spec.get("state", "open"))
    return {
        "type": action,
        "finding": spec["id"],
        **{k: shown[k] for k in ("rule", "title", "severity", "owasp_nhi", "nist_csf")},
        "identity": spec["identity"],
        "owner": spec["owner"],
        "at": spec["last_seen"],
        "recommendation": spec.get("recommendation"),
    }


def _waiver_for(
    shared: _Shared, draft: Draft, identity: Identity, now: dt.datetime
) -> Waiver | None:
    for waiver in shared.waivers:
        if waiver.active(now) and waiver.covers(
            draft.rule, identity.id, identity.owner_id, draft.subject
        ):
            return waiver
    return None


def page_all(tx: Tx, where: GovernFilter) -> list[GovernRecord]:
    """Every record `where` selects, read in pages of 5,000 (the package's one pager)."""
    out: list[GovernRecord] = []
    where = replace(where, limit=5000)
    while True:
        page = tx.list_govern(where)
        out += page
        if len(page) < where.limit:
            return out
        where = replace(where, after_id=page[-1].id)


def _leases_of(tx: Tx, identity_id: str) -> list[Lease]:
    found: list[Lease] = []
    where = LeaseFilter(identity_id=identity_id, states=_LIVE_OR_REVOKING, limit=1000)
    while page := tx.find_leases(where):
        found += page
        if len(page) < where.limit:
            break
        where = replace(where, after_id=page[-1].id)
    return found


def _suspect_leases(
    tx: Tx, view: EstateView, now: dt.datetime, ids: Sequence[str] | None
) -> dict[str, list[Lease]]:
    """The leases that can raise a finding, by identity (of `ids`, or of every identity):
    every lease still revoking, every live lease of a retired identity, live leases older
    than the shortest age the long-lived rule looks at, and those with a long delegation
    chain. Bounded by what is wrong, not by how many leases there are: an identity that
    holds 20,000 fresh leases costs one indexed query, not 20,000 rows read."""
    youngest = (
        min(
            (c.rotate_every or view.governance.thresholds(c.kind).credential_max_age)
            for c in view.controls.values()
        )
        if view.controls
        else dt.timedelta(days=30)
    )
    suspect = SuspectLeases(issued_before=now - youngest, chain=DELEGATION_CHAIN_LONG)
    out: dict[str, list[Lease]] = {}
    chunks: list[tuple[str, ...] | None] = (
        [None] if ids is None else [tuple(ids[i : i + 500]) for i in range(0, len(ids), 500)]
    )
    for chunk in chunks:
        where = LeaseFilter(
            states=_LIVE_OR_REVOKING, identity_ids=chunk, suspect=suspect, limit=5000
        )
        while page := tx.find_leases(where):
            for lease in page:
                out.setdefault(lease.identity_id, []).append(lease)
            if len(page) < where.limit:
                break
            where = replace(where, after_id=page[-1].id)
    retired = (
        i.id
        for i in (view.identities.values() if ids is None else (view.identities[i] for i in ids))
        if i.status is IdentityStatus.RETIRED
    )
    for identity_id in retired:
        out[identity_id] = _leases_of(tx, identity_id)
    return out


__all__ = ["DraftLike", "EngineParts", "FindingsEngine", "Outcome", "PageDrafts", "finding_id"]
