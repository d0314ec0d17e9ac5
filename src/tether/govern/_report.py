"""The evidence report: what an auditor asks for, computed from the audit log.

Every count is derived from audit entries (findings, reviews, exceptions, credentials
issued and ended, trigger-to-dead times) and names their sequence numbers, so an auditor
can verify the chain (`tether audit verify`), export it, and recompute each number.
Coverage is of the inventory as applied; it names the `estate.apply` entry it reflects.
Keys (tether.keys) are listed as their metadata stands now (never material), with the
rotations and approvals of each in the period, from the audit.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_time, parse_time
from tether.estate import EstateView
from tether.model import RULES, AuditRecord, Criticality, IdentityStatus
from tether.static import StaticCredential
from tether.targets import kind_names

FRAMEWORKS = ("owasp-nhi", "nist-csf")
TRIGGERS = (
    "task_end",
    "approval_expiry",
    "vendor_end",
    "owner_departed",
    "retirement",
    "exposure",
    "kill_switch",
)
_ISSUE_ACTIONS = ("token.exchange", "credential.issue")
#: A credential bounded by one of these ends when the trigger fires, by expiry: its
#: `lease.expire` entry is when it died (invariant 3 made the trigger its end of life).
_BOUND_TRIGGERS = {
    "approval expiry": "approval_expiry",
    "vendor contract end": "vendor_end",
}
#: The inventory fields whose coverage the report gives.
COVERAGE = ("owner", "purpose", "justification", "approval", "attestation")
#: What the keys section counts of each key's approval requests, by audit action.
KEY_APPROVALS = {
    "key.approval.request": "requested",
    "key.approval.approve": "approved",
    "key.approval.deny": "denied",
    "key.approval.execute": "executed",
    "key.approval.expire": "expired",
    "key.approval.cancel": "cancelled",
}


@dataclass(slots=True)
class _Finding:
    rule: str
    severity: str
    controls: tuple[str, ...]
    state: str = "open"
    opened_at: dt.datetime | None = None
    seqs: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Tally:
    count: int = 0
    seqs: list[int] = field(default_factory=list)

    def add(self, seq: int) -> None:
        self.count += 1
        self.seqs.append(seq)


class _Reader:
    """One pass over the audit log, keeping only what the report needs."""

    def __init__(self, framework: str, since: dt.datetime) -> None:
        self.framework = framework
        self.since = since
        self.findings: dict[str, _Finding] = {}
        self.issued = _Tally()
        self.revoked = _Tally()
        self.expired = _Tally()
        self.campaigns = _Tally()
        self.completed = _Tally()
        self.items = 0
        self.decisions: dict[str, _Tally] = {}
        self.exceptions: dict[str, tuple[str, dt.datetime | None, list[int]]] = {}
        self.estate_apply: int | None = None
        self.estate_changed: dict[str, tuple[dt.datetime, int]] = {}
        #: lease id → (trigger kind, trigger time, seqs) for revocations still pending.
        self.pending_dead: dict[str, tuple[str, dt.datetime, list[int]]] = {}
        self.exposed: dict[tuple[str, int], tuple[dt.datetime, int]] = {}
        self.samples: dict[str, list[tuple[float, list[int]]]] = {t: [] for t in TRIGGERS}
        #: lease id → (trigger kind, issuance seq) for leases bounded by a trigger.
        self.bounded: dict[str, tuple[str, int]] = {}
        #: key name → its rotations in the period; its approval events by KEY_APPROVALS.
        self.rotations: dict[str, _Tally] = {}
        self.approvals: dict[str, dict[str, _Tally]] = {}

    def read(self, record: AuditRecord) -> None:
        action = record.action
        if action in _FINDING_STATES:  # not finding.assign: a queue, not a state
            self._finding(record)
            return
        details: dict[str, Any] = json.loads(record.details)
        recent = record.ts >= self.since
        if action in _ISSUE_ACTIONS or action.startswith("lease."):
            self._lease(record, details, recent)
        elif action.startswith("review.") and recent:
            self._review(record, details)
        elif action.startswith("key.") and recent and record.result == "ok":
            self._key(record, details)
        elif action.startswith("exception."):
            self._exception(record, details)
        elif action == "estate.apply":
            self.estate_apply = record.seq
        elif action in ("estate.retire", "estate.update") and record.identity_id:
            if "status" in details.get("fields", []):
                self.estate_changed[record.identity_id] = (record.ts, record.seq)
        elif action == "alert.exposure":
            key = (details.get("credential", ""), int(details.get("version", 0)))
            self.exposed[key] = (record.ts, record.seq)
        elif action == "credential.retire":
            key = (details.get("credential", ""), int(details.get("version", 0)))
            start = self.exposed.pop(key, None)
            if start is not None and start[0] >= self.since:
                seconds = (record.ts - start[0]).total_seconds()
                self.samples["exposure"].append((seconds, [start[1], record.seq]))

    def _lease(self, record: AuditRecord, details: Mapping[str, Any], recent: bool) -> None:
        action = record.action
        if action in _ISSUE_ACTIONS:
            if record.result == "allow" and details.get("lease_id"):
                if recent:
                    self.issued.add(record.seq)
                kind = _BOUND_TRIGGERS.get(details.get("bounded_by") or "")
                if kind is not None:
                    self.bounded[details["lease_id"]] = (kind, record.seq)
        elif action == "lease.revoke":
            if recent:
                self.revoked.add(record.seq)
            self.bounded.pop(details.get("lease_id", ""), None)
            self._revoked(record, details)
        elif action == "lease.expire":
            if recent:
                self.expired.add(record.seq)
            bound = self.bounded.pop(details.get("lease_id", ""), None)
            if bound is not None and recent and details.get("expires_at"):
                seconds = (record.ts - parse_time(details["expires_at"])).total_seconds()
                self.samples[bound[0]].append((max(0.0, seconds), [bound[1], record.seq]))
        elif action == "lease.revoke.confirmed":
            self._confirmed(record, details)

    def _finding(self, record: AuditRecord) -> None:
        details = json.loads(record.details)
        key = "owasp_nhi" if self.framework == "owasp-nhi" else "nist_csf"
        finding = self.findings.get(details["finding"])
        if finding is None:
            finding = self.findings[details["finding"]] = _Finding(
                details["rule"], details["severity"], tuple(details.get(key, ()))
            )
        finding.seqs.append(record.seq)
        state = _FINDING_STATES[record.action]
        if (state == "open" and finding.state != "open") or finding.opened_at is None:
            finding.opened_at = record.ts
        finding.state = state

    def _revoked(self, record: AuditRecord, details: Mapping[str, Any]) -> None:
        trigger = details.get("trigger")
        if not trigger or trigger.get("kind") not in TRIGGERS:
            return
        kind = trigger["kind"]
        at: dt.datetime | None = parse_time(trigger["at"]) if trigger.get("at") else None
        seqs = [record.seq]
        if at is None and kind == "retirement" and record.identity_id in self.estate_changed:
            at, changed_seq = self.estate_changed[record.identity_id]
            seqs.insert(0, changed_seq)
        if at is None or record.ts < self.since:
            return
        if record.result == "pending":  # an external credential: dead once confirmed
            self.pending_dead[details["lease_id"]] = (kind, at, seqs)
        else:
            self.samples[kind].append((max(0.0, (record.ts - at).total_seconds()), seqs))

    def _confirmed(self, record: AuditRecord, details: Mapping[str, Any]) -> None:
        pending = self.pending_dead.pop(details.get("lease_id", ""), None)
        if pending is not None:
            kind, at, seqs = pending
            seconds = max(0.0, (record.ts - at).total_seconds())
            self.samples[kind].append((seconds, [*seqs, record.seq]))

    def _review(self, record: AuditRecord, details: Mapping[str, Any]) -> None:
        if record.action == "review.start":
            self.campaigns.add(record.seq)
            self.items += int(details.get("items", 0))
        elif record.action == "review.complete":
            self.completed.add(record.seq)
        elif record.action == "review.decide":
            self.decisions.setdefault(details["decision"], _Tally()).add(record.seq)

    def _key(self, record: AuditRecord, details: Mapping[str, Any]) -> None:
        name = details.get("key")
        if not isinstance(name, str):
            return
        if record.action == "key.rotate":
            self.rotations.setdefault(name, _Tally()).add(record.seq)
        elif record.action in KEY_APPROVALS:
            counts = self.approvals.setdefault(name, {})
            counts.setdefault(KEY_APPROVALS[record.action], _Tally()).add(record.seq)

    def _exception(self, record: AuditRecord, details: Mapping[str, Any]) -> None:
        held = self.exceptions.get(details["exception"])
        seqs = [*held[2], record.seq] if held else [record.seq]
        expires = parse_time(details["expires"]) if details.get("expires") else None
        self.exceptions[details["exception"]] = (details["state"], expires, seqs)


#: The audit actions that change a finding's state, and the state each leaves it in.
_FINDING_STATES = {
    "finding.open": "open",
    "finding.reopen": "open",
    "finding.excepted": "excepted",
    "finding.resolve": "resolved",
}


def _trigger(samples: list[tuple[float, list[int]]]) -> dict[str, Any]:
    seconds = [s for s, _ in samples]
    return {
        "count": len(samples),
        "median_s": round(statistics.median(seconds), 3) if seconds else None,
        "max_s": round(max(seconds), 3) if seconds else None,
        "audit_entries": sorted({seq for _, seqs in samples for seq in seqs}),
    }


def _coverage(view: EstateView, now: dt.datetime, apply_seq: int | None) -> dict[str, Any]:
    identities = [i for i in view.identities.values() if i.status is not IdentityStatus.RETIRED]
    has = {name: 0 for name in COVERAGE}
    for identity in identities:
        owner = view.owners.get(identity.owner_id)
        has["owner"] += owner is not None and not owner.departed
        has["purpose"] += bool(identity.purpose.strip())
        has["justification"] += bool(identity.justification.strip())
        has["approval"] += identity.approval is not None and identity.approval.expires_at > now
        has["attestation"] += identity.attest is not None
    total = len(identities)
    entries = [apply_seq] if apply_seq is not None else []
    return {
        "identities": total,
        "fields": {
            name: {
                "count": count,
                "share": round(count / total, 4) if total else 0.0,
                "audit_entries": entries,
            }
            for name, count in has.items()
        },
    }


def _keys(
    reader: _Reader,
    view: EstateView,
    keys: Sequence[Mapping[str, Any]],
    open_findings: Mapping[str, int],
) -> dict[str, Any]:
    """Each key as it stands (its metadata, never material), with its rotations and
    approval requests in the period and its open findings."""
    items = []
    seqs: list[int] = []
    for key in sorted(keys, key=lambda k: str(k["name"])):
        name = str(key["name"])
        rotations = reader.rotations.get(name, _Tally())
        approvals = reader.approvals.get(name, {})
        approval_seqs = sorted(s for t in approvals.values() for s in t.seqs)
        seqs += rotations.seqs + approval_seqs
        escrow = key.get("escrow")
        items.append(
            {
                "name": name,
                "type": key["type"],
                "identity": key["identity"],
                "identity_in_estate": key["identity"] in view.identities,
                "latest_version": key["latest_version"],
                "min_decryption_version": key["min_decryption_version"],
                "min_encryption_version": key["min_encryption_version"],
                "escrowed": escrow is not None,
                "escrow_threshold": None if escrow is None else escrow["threshold"],
                "escrow_holders": None if escrow is None else escrow["holders"],
                "rotations": {"count": rotations.count, "audit_entries": sorted(rotations.seqs)},
                "approvals": {
                    **{
                        kind: approvals[kind].count if kind in approvals else 0
                        for kind in KEY_APPROVALS.values()
                    },
                    "audit_entries": approval_seqs,
                },
                "open_findings": open_findings.get(name, 0),
            }
        )
    return {
        "total": len(items),
        "escrowed": sum(1 for i in items if i["escrowed"]),
        "rotations": sum(i["rotations"]["count"] for i in items),
        "open_findings": sum(i["open_findings"] for i in items),
        "items": items,
        "audit_entries": sorted(seqs),
    }


def build_report(
    records: Iterable[AuditRecord],
    view: EstateView,
    *,
    framework: str,
    since: dt.datetime,
    now: dt.datetime,
    keys: Sequence[Mapping[str, Any]] | None = None,
    key_findings: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The report. `keys`: the key service's summaries (name, type, identity, versions,
    escrow: {threshold, holders}); with them, a `keys` section. `key_findings`: open
    findings by key name."""
    reader = _Reader(framework, since)
    head = (0, "")
    for record in records:
        reader.read(record)
        head = (record.seq, record.hash)
    by_rule: dict[str, dict[str, Any]] = {}
    by_severity = {"critical": 0, "high": 0, "medium": 0, "low": 0}
    by_control: dict[str, int] = {}
    for finding in reader.findings.values():
        rule = RULES[finding.rule]
        row = by_rule.setdefault(
            finding.rule,
            {
                "rule": rule.id,
                "title": rule.title,
                "severity": rule.severity.value,
                "owasp_nhi": list(rule.owasp_nhi),
                "nist_csf": list(rule.nist_csf),
                "open": 0,
                "excepted": 0,
                "resolved": 0,
                "oldest_open_age_s": None,
                "audit_entries": [],
            },
        )
        row[finding.state] += 1
        row["audit_entries"] += finding.seqs
        if finding.state == "open":
            by_severity[finding.severity] += 1
            for control in finding.controls:
                by_control[control] = by_control.get(control, 0) + 1
            if finding.opened_at is not None:
                age = round((now - finding.opened_at).total_seconds(), 3)
                oldest = row["oldest_open_age_s"]
                row["oldest_open_age_s"] = age if oldest is None else max(oldest, age)
    for row in by_rule.values():
        row["audit_entries"] = sorted(row["audit_entries"])
    active = expired = 0
    exception_seqs: list[int] = []
    for state, expires, seqs in reader.exceptions.values():
        exception_seqs += seqs
        if state == "active" and (expires is None or expires > now):
            active += 1
        elif state == "expired" or (state == "active" and expires is not None):
            expired += 1
    for waiver in view.exceptions.values():
        if waiver.active(now):
            active += 1
        else:
            expired += 1
    decided = sum(t.count for t in reader.decisions.values())
    report = {
        "framework": framework,
        "since": format_time(since),
        "generated_at": format_time(now),
        "audit_head": {"seq": head[0], "hash": head[1]},
        "coverage": _coverage(view, now, reader.estate_apply),
        "findings": {
            "total": sum(r["open"] + r["excepted"] + r["resolved"] for r in by_rule.values()),
            "by_rule": [by_rule[k] for k in sorted(by_rule)],
            "by_severity": by_severity,
            "by_control": dict(sorted(by_control.items())),
        },
        "reviews": {
            "campaigns": reader.campaigns.count,
            "completed": reader.completed.count,
            "items": reader.items,
            "decided": decided,
            "by_decision": {k: v.count for k, v in sorted(reader.decisions.items())},
            "audit_entries": sorted(
                reader.campaigns.seqs
                + reader.completed.seqs
                + [s for t in reader.decisions.values() for s in t.seqs]
            ),
        },
        "exceptions": {
            "active": active,
            "expired": expired,
            "audit_entries": sorted(exception_seqs),
        },
        "leases": {
            "issued": reader.issued.count,
            "revoked": reader.revoked.count,
            "expired": reader.expired.count,
            "audit_entries": sorted(reader.issued.seqs + reader.revoked.seqs + reader.expired.seqs),
        },
        "trigger_to_dead": {kind: _trigger(reader.samples[kind]) for kind in TRIGGERS},
    }
    if keys is not None:
        report["keys"] = _keys(reader, view, keys, key_findings or {})
    return report


_CRITICALITY = {
    Criticality.LOW: 1,
    Criticality.MEDIUM: 2,
    Criticality.HIGH: 3,
    Criticality.CRITICAL: 4,
}


def migration_report(
    view: EstateView,
    statics: Iterable[StaticCredential],
    exposures: Mapping[str, int],
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Legacy and static secrets, riskiest first, each with the dynamic profile that
    could replace it where its target offers one.

    rank = 10 x highest criticality of its readers + 20 x exposures + age in days / 30
    """
    dynamic: dict[str, list[str]] = {}
    for profile in view.profiles.values():
        if profile.target and profile.provider in kind_names():
            dynamic.setdefault(profile.target, []).append(profile.id)
    rows = []
    for credential in statics:
        readers = [view.identities[r] for r in credential.readers if r in view.identities]
        criticality = max((_CRITICALITY[r.criticality] for r in readers), default=1)
        age_days = (now - credential.last_rotated_at).total_seconds() / 86400
        exposed = exposures.get(credential.id, 0)
        rows.append(
            {
                "secret": credential.id,
                "kind": credential.kind,
                "target": credential.target,
                "readers": sorted(credential.readers),
                "criticality": max(
                    (r.criticality.value for r in readers),
                    default="low",
                    key=lambda c: _CRITICALITY[Criticality(c)],
                ),
                "exposures": exposed,
                "age_days": round(age_days, 1),
                "rank": round(10 * criticality + 20 * exposed + age_days / 30, 2),
                "replace_with": sorted(dynamic.get(credential.target or "", [])),
            }
        )
    for identity in view.identities.values():
        if identity.kind.value != "legacy_static" or identity.status is IdentityStatus.RETIRED:
            continue
        targets = {
            view.profiles[e.profile_id].target
            for e in identity.entitlements
            if e.profile_id in view.profiles and view.profiles[e.profile_id].target
        }
        rows.append(
            {
                "secret": f"identity:{identity.id}",
                "kind": identity.kind.value,
                "target": ", ".join(sorted(t for t in targets if t)) or None,
                "readers": [identity.id],
                "criticality": identity.criticality.value,
                "exposures": 0,
                "age_days": None,
                "rank": float(10 * _CRITICALITY[identity.criticality]),
                "replace_with": sorted(p for t in targets if t for p in dynamic.get(t, [])),
            }
        )
    return sorted(rows, key=lambda r: (-r["rank"], r["secret"]))
