"""Access reviews: a campaign puts each identity and entitlement in scope to its owner,
with the usage evidence and a recommendation (keep, narrow, revoke).

A revoke or narrow takes effect when it is decided: the entitlement is withdrawn from
the estate view (every node reloads it, as after an apply), the identity's live
credentials under it are revoked in the same transaction, and the decision is audited.
Because the estate lives in git, the withdrawal holds until the file agrees
(`tether review export` writes that change); an apply of a file that still grants it
reports it and re-grants nothing. Items left pending at the due date take the
campaign's default: revoke, or escalate (an alert to the owner's managers).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tether._internal.timeutil import format_time, parse_time
from tether.audit import AuditLog
from tether.cluster import ESTATE_APPLIED, publish_govern_changed
from tether.estate import EstateViewHolder
from tether.estate._view import VERSION_KEY, WITHDRAWAL_TYPE, Withdrawal, withdrawal_key
from tether.govern._engine import SUBJECT, page_all
from tether.govern.errors import AlreadyDecided, InvalidReview, NotReviewer, UnknownGovernObject
from tether.lease import LeaseService
from tether.model import (
    AuditEvent,
    Criticality,
    Entitlement,
    Identity,
    IdentityStatus,
    Kind,
    LeaseState,
    Profile,
)
from tether.store import GovernFilter, GovernRecord, LeaseFilter, Store, Tx, UsageRollup


@dataclass(frozen=True, slots=True)
class EntitlementEvidence:
    """What an entitlement grants and what use of it the rollups show: a review item's
    evidence, and the identity page's."""

    granted: list[str]
    count: int
    last_seen: dt.datetime | None
    scopes_used: list[str]
    sources: list[str]

    @property
    def unused(self) -> list[str]:
        """Granted scopes never used (all of them when the entitlement was not used)."""
        return [s for s in self.granted if s not in self.scopes_used]


def entitlement_evidence(
    entitlement: Entitlement, profiles: Mapping[str, Profile], rollups: Sequence[UsageRollup]
) -> EntitlementEvidence:
    """`rollups` are the identity's use of this entitlement (any days)."""
    profile = profiles.get(entitlement.profile_id)
    granted = list(
        (profile.scopes if profile else ()) if entitlement.scopes is None else entitlement.scopes
    )
    return EntitlementEvidence(
        granted=granted,
        count=sum(r.count for r in rollups),
        last_seen=max((r.last_seen for r in rollups), default=None),
        scopes_used=sorted({s for r in rollups for s in r.facets.get("scope", ())}),
        sources=sorted({s for r in rollups for s in r.facets.get("source", ())}),
    )


CAMPAIGN = "campaign"
ITEM = "review_item"
DECISIONS = ("keep", "narrow", "revoke")
DEFAULTS = ("revoke", "escalate")
_DEFAULT_DUE = dt.timedelta(days=14)


@dataclass(frozen=True, slots=True)
class ReviewScope:
    owner: str | None = None
    kind: str | None = None
    criticality: str | None = None

    def check(self) -> None:
        given = [v for v in (self.owner, self.kind, self.criticality) if v is not None]
        if len(given) != 1:
            raise InvalidReview("scope: give exactly one of owner, kind or criticality")
        if self.kind is not None and self.kind not in {k.value for k in Kind}:
            raise InvalidReview(f"kind: unknown kind {self.kind!r}")
        if self.criticality is not None and self.criticality not in {c.value for c in Criticality}:
            raise InvalidReview(f"criticality: unknown criticality {self.criticality!r}")

    def matches(self, identity: Identity) -> bool:
        if self.owner is not None:
            return identity.owner_id == self.owner
        if self.kind is not None:
            return identity.kind.value == self.kind
        return identity.criticality.value == self.criticality

    def to_dict(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("owner", self.owner),
                ("kind", self.kind),
                ("criticality", self.criticality),
            )
            if v is not None
        }


@dataclass(frozen=True, slots=True)
class Reviewer:
    """Who decides: an actor name, and the owners it may decide for (None: any)."""

    actor: str
    owners: tuple[str, ...] | None


def _item_id(campaign: str, identity_id: str, profile_id: str) -> str:
    digest = hashlib.sha256(f"{campaign}\x00{identity_id}\x00{profile_id}".encode()).hexdigest()
    return f"rvi_{digest[:20]}"


class Reviews:
    def __init__(
        self,
        store: Store,
        view: EstateViewHolder,
        audit: AuditLog,
        leases: LeaseService,
        clock: Callable[[], dt.datetime],
        changed: Callable[[set[str]], None],
        alert: Callable[[Tx, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._store = store
        self._view = view
        self._audit = audit
        self._leases = leases
        self._clock = clock
        self._changed = changed
        self._alert = alert
        #: Writes this process's buffered usage (a campaign's evidence includes it).
        self.flush_usage: Callable[[], object] = lambda: None

    # -- campaigns --
    def start(
        self, scope: ReviewScope, due: dt.datetime | None, default: str, actor: str
    ) -> dict[str, Any]:
        scope.check()
        if default not in DEFAULTS:
            raise InvalidReview(f"default: must be one of {', '.join(DEFAULTS)}")
        now = self._clock()
        due = due or now + _DEFAULT_DUE
        if due <= now:
            raise InvalidReview("due: must be in the future")
        self.flush_usage()  # this process's latest uses are evidence too
        view = self._view.current
        identities = sorted(
            (
                i
                for i in view.identities.values()
                if scope.matches(i) and i.status is IdentityStatus.ACTIVE
            ),
            key=lambda i: i.id,
        )
        if scope.owner is not None and scope.owner not in view.owners:
            raise InvalidReview(f"owner: unknown owner {scope.owner!r}")
        campaign_id = f"rev_{secrets.token_hex(6)}"
        items = self._items(campaign_id, identities, now)
        if not items:
            raise InvalidReview("scope: no entitlement of an active identity is in scope")
        campaign = {
            "id": campaign_id,
            "scope": scope.to_dict(),
            "due": format_time(due),
            "default": default,
            "created_by": actor,
            "created_at": format_time(now),
            "state": "open",
            "items": len(items),
            "decided": 0,
        }
        with self._store.transaction() as tx:
            tx.put_govern([_campaign_record(campaign, now), *items])
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="review.start",
                        actor=actor,
                        reason=f"access review of {scope.to_dict()}",
                        details={
                            "campaign": campaign_id,
                            "scope": scope.to_dict(),
                            "items": len(items),
                            "due": campaign["due"],
                            "default": default,
                        },
                    )
                ],
                now,
            )
        return campaign

    def _items(
        self, campaign_id: str, identities: Sequence[Identity], now: dt.datetime
    ) -> list[GovernRecord]:
        view = self._view.current
        ids = [i.id for i in identities]
        window = view.governance.defaults.unused_entitlement_after
        with self._store.read() as tx:
            rollups = tx.usage_for(ids, (now - window).date()) if ids else []
        by: dict[tuple[str, str], list[Any]] = {}
        for rollup in rollups:
            by.setdefault((rollup.identity_id, rollup.entitlement), []).append(rollup)
        out: list[GovernRecord] = []
        for identity in identities:
            for entitlement in identity.entitlements:
                evidence = entitlement_evidence(
                    entitlement, view.profiles, by.get((identity.id, entitlement.profile_id), [])
                )
                granted, count, last = evidence.granted, evidence.count, evidence.last_seen
                scopes_used = evidence.scopes_used
                if count == 0:
                    recommendation, narrow_to = "revoke", None
                elif granted and set(granted) - set(scopes_used):
                    recommendation = "narrow"
                    narrow_to = [s for s in granted if s in scopes_used]
                else:
                    recommendation, narrow_to = "keep", None
                item_id = _item_id(campaign_id, identity.id, entitlement.profile_id)
                spec = {
                    "id": item_id,
                    "campaign": campaign_id,
                    "identity": identity.id,
                    "owner": identity.owner_id,
                    "profile": entitlement.profile_id,
                    "granted_scopes": granted,
                    "usage": {
                        "window": format_time(now - window),
                        "count": count,
                        "last_seen": format_time(last) if last else None,
                        "scopes_used": scopes_used,
                        "sources": evidence.sources[:16],
                    },
                    "recommendation": recommendation,
                    "narrow_to": narrow_to,
                    "state": "pending",
                    "decision": None,
                }
                out.append(
                    GovernRecord(
                        type=ITEM,
                        id=item_id,
                        group_id=campaign_id,
                        state="pending",
                        spec=spec,
                        updated_at=now,
                        identity_id=identity.id,
                        owner_id=identity.owner_id,
                    )
                )
        return out

    def campaigns(self, owners: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        with self._store.read() as tx:
            campaigns = page_all(tx, GovernFilter(type=CAMPAIGN))
            if owners is None:
                return [dict(c.spec) for c in campaigns]
            mine = {r.group_id for r in page_all(tx, GovernFilter(type=ITEM, owner_in=owners))}
        return [dict(c.spec) for c in campaigns if c.id in mine]

    def show(self, campaign_id: str, owners: tuple[str, ...] | None = None) -> dict[str, Any]:
        with self._store.read() as tx:
            campaign = tx.get_govern(CAMPAIGN, campaign_id)
            if campaign is None:
                raise UnknownGovernObject(f"no review {campaign_id!r}")
            items = page_all(tx, GovernFilter(type=ITEM, group_id=campaign_id, owner_in=owners))
        if owners is not None and not items:
            raise UnknownGovernObject(f"no review {campaign_id!r}")
        return {**campaign.spec, "entries": [dict(i.spec) for i in items]}

    # -- decisions --
    def decide(
        self,
        item_id: str,
        decision: str,
        reviewer: Reviewer,
        scopes: Sequence[str] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        if decision not in DECISIONS:
            raise InvalidReview(f"decision: must be one of {', '.join(DECISIONS)}")
        with self._store.read() as tx:
            item = tx.get_govern(ITEM, item_id)
        if item is None:
            raise UnknownGovernObject(f"no review item {item_id!r}")
        # The identity's owner now, not when the campaign started: an identity handed to
        # another team is that team's to decide.
        identity = self._view.current.identities.get(item.identity_id or "")
        owner = identity.owner_id if identity is not None else item.owner_id
        if reviewer.owners is not None and owner not in reviewer.owners:
            raise NotReviewer(f"only the owner of {item.identity_id} or an admin decides this")
        narrowed: tuple[str, ...] | None = None
        if decision == "narrow":
            granted = item.spec["granted_scopes"]
            chosen = list(scopes) if scopes is not None else item.spec.get("narrow_to")
            if not chosen:
                raise InvalidReview("scopes: narrow needs the scopes to keep")
            extra = sorted(set(chosen) - set(granted))
            if extra:
                raise InvalidReview(f"scopes: not granted now: {', '.join(extra)}")
            narrowed = tuple(chosen)
        return self._decide(item, decision, narrowed, reviewer.actor, reason)

    def _decide(
        self,
        item: GovernRecord,
        decision: str,
        narrowed: tuple[str, ...] | None,
        actor: str,
        reason: str | None,
        state: str | None = None,
        alert: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = self._clock()
        identity_id, profile_id = item.spec["identity"], item.spec["profile"]
        with self._store.transaction() as tx:
            fresh = tx.get_govern(ITEM, item.id)
            assert fresh is not None
            if fresh.state != "pending":
                raise AlreadyDecided(f"review item {item.id} was decided: {fresh.state}")
            taken = {
                "decision": decision,
                "scopes": list(narrowed) if narrowed else None,
                "by": actor,
                "at": format_time(now),
                "reason": reason,
            }
            spec = {**fresh.spec, "state": state or decision, "decision": taken}
            tx.put_govern([replace(fresh, state=state or decision, spec=spec, updated_at=now)])
            revoked = 0
            if decision in ("revoke", "narrow"):
                withdrawal = Withdrawal(
                    identity_id,
                    profile_id,
                    narrowed if decision == "narrow" else None,
                    actor,
                    format_time(now),
                    item.group_id,
                    item.id,
                )
                tx.put_estate_object(WITHDRAWAL_TYPE, withdrawal.key, withdrawal.to_spec())
                revoked = self._revoke(tx, identity_id, profile_id, narrowed, item.group_id, actor)
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="review.decide",
                        actor=actor,
                        identity_id=identity_id,
                        owner_id=item.owner_id,
                        reason=reason,
                        details={
                            "campaign": item.group_id,
                            "item": item.id,
                            "profile": profile_id,
                            "decision": decision,
                            "scopes": list(narrowed) if narrowed else None,
                            "recommendation": item.spec.get("recommendation"),
                            "leases_revoked": revoked,
                        },
                    )
                ],
                now,
            )
            if decision in ("revoke", "narrow"):
                # After the audit append, which serializes writers (as `apply` does): every
                # node reloads its estate view, as after an apply.
                version = int(tx.get_meta(VERSION_KEY) or b"0") + 1
                tx.put_meta(VERSION_KEY, str(version).encode())
                tx.publish(ESTATE_APPLIED, {"version": version})
            else:
                publish_govern_changed(tx, [identity_id])  # reviewed: the leader re-evaluates
            if alert is not None and self._alert is not None:
                self._alert(tx, alert)
            self._progress(tx, item.group_id, identity_id, now)
        if decision in ("revoke", "narrow"):
            self._view.reload()
        self._changed({identity_id})
        return spec

    def _revoke(
        self,
        tx: Tx,
        identity_id: str,
        profile_id: str,
        narrowed: tuple[str, ...] | None,
        campaign: str,
        actor: str,
    ) -> int:
        live = [
            lease
            for lease in _live(tx, identity_id)
            if lease.profile_id == profile_id
            and (narrowed is None or not set(lease.scopes) <= set(narrowed))
        ]
        if not live:
            return 0
        what = "revoked" if narrowed is None else "narrowed"
        reason = f"access review {campaign} {what} entitlement {profile_id}"
        return len(self._leases.revoke_leases_in(tx, live, reason, actor))

    def _progress(self, tx: Tx, campaign_id: str, identity_id: str, now: dt.datetime) -> None:
        campaign = tx.get_govern(CAMPAIGN, campaign_id)
        assert campaign is not None
        # This identity's items only (indexed): a campaign of many items stays linear.
        mine = [
            i
            for i in page_all(tx, GovernFilter(type=ITEM, identity_id=identity_id))
            if i.group_id == campaign_id
        ]
        if all(i.state != "pending" for i in mine):
            self._reviewed(tx, identity_id, now)
        decided = int(campaign.spec.get("decided", 0)) + 1
        spec = {**campaign.spec, "decided": decided}
        state = campaign.state
        if decided >= int(campaign.spec.get("items", 0)) and state == "open":
            items = page_all(tx, GovernFilter(type=ITEM, group_id=campaign_id))
            state = spec["state"] = "completed"
            spec["completed_at"] = format_time(now)
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="review.complete",
                        actor="system:review",
                        details={
                            "campaign": campaign_id,
                            "items": len(items),
                            "by_decision": _by_decision(items),
                        },
                    )
                ],
                now,
            )
        tx.put_govern([replace(campaign, state=state, spec=spec, updated_at=now)])

    def _reviewed(self, tx: Tx, identity_id: str, now: dt.datetime) -> None:
        subject = tx.get_govern(SUBJECT, identity_id)
        if subject is not None:
            spec = {**subject.spec, "reviewed_at": format_time(now)}
            tx.put_govern([replace(subject, spec=spec, updated_at=now)])
            return
        identity = self._view.current.identities.get(identity_id)
        tx.put_govern(
            [
                GovernRecord(
                    type=SUBJECT,
                    id=identity_id,
                    group_id="",
                    state="tracked",
                    spec={"tracked_since": format_time(now), "reviewed_at": format_time(now)},
                    updated_at=now,
                    identity_id=identity_id,
                    owner_id=identity.owner_id if identity else None,
                )
            ]
        )

    def process_due(self) -> int:
        """Campaigns past their due date: pending items take the campaign's default."""
        now = self._clock()
        with self._store.read() as tx:
            due = [
                c
                for c in page_all(tx, GovernFilter(type=CAMPAIGN, states=("open",)))
                if parse_time(c.spec["due"]) <= now
            ]
        handled = 0
        for campaign in due:
            with self._store.read() as tx:
                pending = page_all(
                    tx, GovernFilter(type=ITEM, group_id=campaign.id, states=("pending",))
                )
            default = campaign.spec["default"]
            for item in pending:
                reason = f"no decision by the due date {campaign.spec['due']}: default {default}"
                try:
                    if default == "revoke":
                        self._decide(item, "revoke", None, "system:review", reason)
                    else:
                        self._escalate(item, reason)
                except AlreadyDecided:
                    continue
                handled += 1
        return handled

    def _escalate(self, item: GovernRecord, reason: str) -> None:
        # The alert commits with the escalation: neither without the other.
        self._decide(
            item,
            "escalate",
            None,
            "system:review",
            reason,
            state="escalated",
            alert={
                "type": "review.escalate",
                "severity": "high",
                "campaign": item.group_id,
                "item": item.id,
                "identity": item.identity_id,
                "owner": item.owner_id,
                "profile": item.spec["profile"],
                "reason": reason,
            },
        )

    def export(
        self, campaign_id: str, owners: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        """The changes that make an estate file agree with this campaign's decisions (an
        owner scope sees its own identities' only)."""
        campaign = self.show(campaign_id, owners)
        out = []
        for entry in campaign["entries"]:
            decision = entry.get("decision") or {}
            if decision.get("decision") in ("revoke", "narrow"):
                out.append(
                    {
                        "identity": entry["identity"],
                        "profile": entry["profile"],
                        "scopes": decision.get("scopes"),
                    }
                )
        return out


def apply_withdrawals(document: dict[str, Any], changes: Iterable[Mapping[str, Any]]) -> int:
    """Edit a parsed estate document so it grants no more than `changes` allow: an
    entitlement revoked is removed, one narrowed keeps only its scopes. How many changed."""
    by_key = {(c["identity"], c["profile"]): c for c in changes}
    changed = 0
    for identity in document.get("identities", []):
        kept = []
        for entry in identity.get("entitlements", []):
            spec = {"profile": entry} if isinstance(entry, str) else dict(entry)
            change = by_key.get((identity.get("id"), spec["profile"]))
            if change is None:
                kept.append(entry)
                continue
            changed += 1
            if change["scopes"] is None:
                continue
            current = spec.get("scopes")
            spec["scopes"] = [s for s in (current or change["scopes"]) if s in change["scopes"]]
            kept.append(spec)
        if "entitlements" in identity:
            identity["entitlements"] = kept
    return changed


def _by_decision(items: Iterable[GovernRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item.state] = out.get(item.state, 0) + 1
    return out


def _campaign_record(spec: Mapping[str, Any], now: dt.datetime) -> GovernRecord:
    return GovernRecord(
        type=CAMPAIGN,
        id=spec["id"],
        group_id="",
        state=spec["state"],
        spec=dict(spec),
        updated_at=now,
    )


def _live(tx: Tx, identity_id: str) -> list[Any]:
    out: list[Any] = []
    where = LeaseFilter(
        identity_id=identity_id, states=(LeaseState.PENDING, LeaseState.ACTIVE), limit=1000
    )
    while page := tx.find_leases(where):
        out += page
        if len(page) < where.limit:
            break
        where = replace(where, after_id=page[-1].id)
    return out


__all__ = [
    "CAMPAIGN",
    "ITEM",
    "ReviewScope",
    "Reviewer",
    "Reviews",
    "apply_withdrawals",
    "withdrawal_key",
]
