"""The estate's `governance:` thresholds and `exceptions:` (time-bound waivers). No I/O.

Thresholds use the estate's duration syntax. Each has a built-in default, may be set for
the whole estate, and may be set again per kind under `governance.kinds.<kind>`, because
what is dormant for an AI agent (days) is not what is dormant for an encryption key.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tether._internal.timeutil import format_duration, format_time, parse_duration, parse_time
from tether.model._estate import Kind, Owner

Spec = dict[str, Any]

#: The id of the one stored `governance` estate object.
GOVERNANCE_ID = "settings"


class OrphanAction(enum.StrEnum):
    #: Report the orphan; its credentials keep working until someone acts.
    ALERT = "alert"
    #: After the grace, the departed owner no longer justifies anything: live
    #: credentials are revoked like any other ended justification, sessions included.
    SUSPEND = "suspend"


_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The durations the findings rules compare against, for one kind."""

    dormant_after: dt.timedelta = 90 * _DAY
    unused_entitlement_after: dt.timedelta = 30 * _DAY
    approval_warning: dt.timedelta = 14 * _DAY
    vendor_warning: dt.timedelta = 30 * _DAY
    revocation_stuck_after: dt.timedelta = dt.timedelta(minutes=15)
    #: A lease of a kind without a rotation interval older than this is long-lived.
    credential_max_age: dt.timedelta = 90 * _DAY
    #: How far back usage shows how an identity is used now (human use, reuse, the
    #: environments it attested from): a psql session long ago is not a finding forever.
    evidence_window: dt.timedelta = 30 * _DAY

    def with_overrides(self, overrides: Mapping[str, Any]) -> Thresholds:
        changes = {
            f.name: parse_duration(overrides[f.name]) for f in fields(self) if f.name in overrides
        }
        return replace(self, **changes)

    def to_spec(self) -> Spec:
        return {f.name: format_duration(getattr(self, f.name)) for f in fields(self)}


THRESHOLD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Thresholds))

#: Application names that mean a person at a console, not a workload (PostgreSQL
#: `application_name`, Redis client names, HTTP user agents are matched by prefix).
DEFAULT_INTERACTIVE_APPLICATIONS: tuple[str, ...] = (
    "psql",
    "pgAdmin",
    "pgadmin",
    "DBeaver",
    "DataGrip",
    "TablePlus",
    "Postico",
    "redis-cli",
    "RedisInsight",
    "Another Redis Desktop Manager",
)
#: User agents of browsers and desktop HTTP tools.
DEFAULT_INTERACTIVE_AGENTS: tuple[str, ...] = (
    "Mozilla/",
    "PostmanRuntime/",
    "insomnia/",
)


@functools.lru_cache(maxsize=64)
def _networks(
    written: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(net, strict=False) for net in written)


@functools.lru_cache(maxsize=65536)
def _address(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(source)
    except ValueError:
        return None  # a host name: not in any network


@dataclass(frozen=True, slots=True)
class GovernanceSettings:
    """The `governance:` section of the estate."""

    defaults: Thresholds = field(default_factory=Thresholds)
    per_kind: Mapping[Kind, Thresholds] = field(default_factory=dict)
    orphaned: OrphanAction = OrphanAction.ALERT
    orphaned_grace: dt.timedelta = dt.timedelta(0)
    workstation_sources: tuple[str, ...] = ()
    interactive_applications: tuple[str, ...] = DEFAULT_INTERACTIVE_APPLICATIONS
    interactive_agents: tuple[str, ...] = DEFAULT_INTERACTIVE_AGENTS
    #: More distinct sources than this for one credential on one day is reuse.
    reuse_max_sources: int = 1
    #: More distinct attested subjects than this for one identity is reuse.
    reuse_max_subjects: int = 1
    #: How often the whole estate is evaluated again (changes are evaluated at once).
    evaluate_every: dt.timedelta = dt.timedelta(hours=1)
    #: Alert sinks, as written (tether.govern parses them).
    sinks: tuple[Mapping[str, Any], ...] = ()
    #: The section as written, so a plan compares what the file says.
    raw: Mapping[str, Any] = field(default_factory=dict)

    def thresholds(self, kind: Kind) -> Thresholds:
        return self.per_kind.get(kind, self.defaults)

    def suspends_at(self, owner: Owner) -> dt.datetime | None:
        """When a departed owner stops justifying its identities' credentials (None:
        never, because the owner is active or governance only alerts)."""
        if not owner.departed or self.orphaned is not OrphanAction.SUSPEND:
            return None
        left = owner.left or dt.datetime.min.replace(tzinfo=dt.UTC)
        return left + self.orphaned_grace

    def is_workstation(self, source: str) -> bool:
        if not self.workstation_sources:
            return False
        address = _address(source)
        return address is not None and any(
            address in network for network in _networks(self.workstation_sources)
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> GovernanceSettings:
        defaults = Thresholds().with_overrides(spec)
        per_kind = {
            Kind(name): defaults.with_overrides(overrides)
            for name, overrides in spec.get("kinds", {}).items()
        }
        orphaned = spec.get("orphaned", {})
        if isinstance(orphaned, str):
            orphaned = {"action": orphaned}
        return cls(
            defaults=defaults,
            per_kind=per_kind,
            orphaned=OrphanAction(orphaned.get("action", "alert")),
            orphaned_grace=parse_duration(orphaned.get("grace", "0s"), zero=True),
            workstation_sources=tuple(spec.get("workstation_sources", ())),
            interactive_applications=tuple(
                spec.get("interactive_applications", DEFAULT_INTERACTIVE_APPLICATIONS)
            ),
            interactive_agents=tuple(spec.get("interactive_agents", DEFAULT_INTERACTIVE_AGENTS)),
            reuse_max_sources=int(spec.get("reuse_max_sources", 1)),
            reuse_max_subjects=int(spec.get("reuse_max_subjects", 1)),
            evaluate_every=parse_duration(spec.get("evaluate_every", "1h")),
            sinks=tuple(spec.get("sinks", ())),
            raw=dict(spec),
        )

    def to_spec(self) -> Spec:
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class Waiver:
    """An exception: a time-bound, approved waiver of one rule for one subject.

    `identity` is the subject (an identity id, or `*` for every identity of `scope`'s
    owner); `scope` narrows further (an owner id, an environment) and is informative.
    The approver is never the requester: nobody waives their own finding.
    """

    id: str
    rule: str
    identity: str
    compensating_control: str
    requested_by: str
    approved_by: str
    expires_at: dt.datetime
    scope: str | None = None
    reason: str | None = None

    def active(self, now: dt.datetime) -> bool:
        return now < self.expires_at

    def covers(self, rule: str, identity_id: str, owner_id: str | None, subject: str = "") -> bool:
        """Whether it waives this finding. For one identity, a `scope` narrows it to the
        finding's subject (`credential:legacy-db`, `profile:long-api`): a waiver of one
        long-lived secret does not hide the next one."""
        if rule != self.rule:
            return False
        if self.identity == "*":
            return self.scope is not None and self.scope == owner_id
        if self.identity != identity_id:
            return False
        return self.scope is None or self.scope == subject

    def to_spec(self) -> Spec:
        spec: Spec = {
            "id": self.id,
            "rule": self.rule,
            "identity": self.identity,
            "compensating_control": self.compensating_control,
            "requested_by": self.requested_by,
            "approved_by": self.approved_by,
            "expires": format_time(self.expires_at),
        }
        if self.scope is not None:
            spec["scope"] = self.scope
        if self.reason is not None:
            spec["reason"] = self.reason
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Waiver:
        return cls(
            id=spec["id"],
            rule=spec["rule"],
            identity=spec["identity"],
            compensating_control=spec["compensating_control"],
            requested_by=spec["requested_by"],
            approved_by=spec["approved_by"],
            expires_at=parse_time(spec["expires"]),
            scope=spec.get("scope"),
            reason=spec.get("reason"),
        )


def suspended_owners(
    governance: GovernanceSettings, owners: Iterable[Owner]
) -> dict[str, dt.datetime]:
    """Departed owners whose identities governance suspends, and from when."""
    out: dict[str, dt.datetime] = {}
    for owner in owners:
        at = governance.suspends_at(owner)
        if at is not None:
            out[owner.id] = at
    return out
