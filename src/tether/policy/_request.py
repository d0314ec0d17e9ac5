"""A policy request and its decision; the request as Cedar's principal, resource and context."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.model import AgentRun, Identity, Profile, Vendor
from tether.policy._compile import ContextUsage
from tether.policy._schema import CLAIM_SELECTORS, IDENTITY_TYPE, PROFILE_TYPE


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """Everything a decision may depend on, as the caller resolved it."""

    identity: Identity
    #: issue | renew | exchange
    action: str
    profile: Profile
    #: The scopes the identity's entitlement grants on this profile (the profile's
    #: scopes when the entitlement does not narrow them); None: not entitled at all.
    #: `entitled_scopes(identity, profile)` computes it.
    entitled_scopes: tuple[str, ...] | None
    #: The scopes that would be minted.
    requested_scopes: tuple[str, ...]
    requested_ttl: dt.timedelta
    #: Timezone-aware.
    now: dt.datetime
    #: The identity's vendor, if it has one.
    vendor: Vendor | None = None
    #: Evidence verified this request (an attestation JWT or a task token derived from one).
    attested: bool = False
    issuer_id: str | None = None
    #: Attestation selectors; those in CLAIM_SELECTORS are visible to policy.
    claims: Mapping[str, str] = field(default_factory=dict)
    task_id: str | None = None
    task_name: str | None = None
    #: Declared intent: free text from the caller.
    intent: str | None = None
    source_ip: str | None = None
    #: Delegation: whom the agent acts for (the `act` claim's subject).
    actor: str | None = None
    #: The whole actor chain, nearest first (`actor` is its head).
    delegation: tuple[str, ...] = ()
    #: The agent run the request is made in: its intent, principal and window.
    run: AgentRun | None = None
    #: The cap of the identity's kind (its control profile).
    kind_max_ttl: dt.timedelta | None = None
    #: The kind's control profile requires attestation: an unattested request is refused
    #: by a guard rail, whatever the policies say.
    attestation_required: bool = False
    #: Whether the identity has an attestation rule at all (an identity of a kind that
    #: must attest, without one, is refused: guardrail `attestation-rule-missing`).
    attestation_rule: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: The policies that determined it (Cedar's reasons, or guard-rail ids).
    policy_ids: tuple[str, ...]
    #: Why, in sentences fit for an OAuth error_description and the audit entry.
    reasons: tuple[str, ...]
    #: Evaluation errors; any of them means deny.
    errors: tuple[str, ...]
    #: The Cedar context that was evaluated (JSON-able), for the audit entry.
    context: Mapping[str, Any]


def entitled_scopes(identity: Identity, profile: Profile) -> tuple[str, ...] | None:
    """What `PolicyRequest.entitled_scopes` should be: None if not entitled."""
    for entitlement in identity.entitlements:
        if entitlement.profile_id == profile.id:
            return profile.scopes if entitlement.scopes is None else entitlement.scopes
    return None


#: Context attributes that change from one request to the next for the same identity
#: (time, TTL, task, free text, network) and claims that change per run. Policy slices
#: are computed with these unknown, so one slice serves many requests.
VOLATILE_CONTEXT = frozenset(
    {"now", "utc_hour", "utc_weekday", "requested_ttl_seconds", "task", "task_name"}
    | {"intent", "source_ip", "actor", "run", "delegation", "delegation_depth"}
)
VOLATILE_CLAIMS = frozenset({"sha", "run_id", "pod", "actor"})


@dataclass(frozen=True, slots=True)
class Built:
    """A request in the forms Cedar and the slice cache need."""

    #: JSON-able, every attribute: what the audit entry records.
    context: dict[str, Any]
    #: Only the attributes some policy reads (see ContextUsage).
    cedar: dict[str, Any]
    principal: str  # entity JSON
    resource: str  # entity JSON
    #: The stable part of `cedar`, hashable: with the principal, resource and action
    #: it names the policy slice.
    stable: tuple[Any, ...]

    def cedar_json(self, volatile_only: bool) -> str:
        """The context as Cedar reads it: JSON text, the source IP as an ipaddr.

        A slice of residual policies has the stable attributes folded in already and
        needs only the volatile ones (fewer to parse: Cedar parses each, a microsecond
        or two apiece).
        """
        cedar = self.cedar
        if volatile_only:
            cedar = {k: v for k, v in cedar.items() if k in VOLATILE_CONTEXT}
            claims = {k: v for k, v in self.cedar.get("claims", {}).items() if k in VOLATILE_CLAIMS}
            if claims:
                cedar["claims"] = claims
        if "source_ip" in cedar:
            cedar = {**cedar, "source_ip": {"__extn": {"fn": "ip", "arg": cedar["source_ip"]}}}
        return json.dumps(cedar)


def epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return math.floor(value.timestamp())


def _claims(claims: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name in CLAIM_SELECTORS:
        value = claims.get(name)
        if value is None:
            continue
        # Refused, not dropped or converted: a forbid may be matching on this claim.
        if not isinstance(value, str):
            raise ValueError(f"claim {name} must be a string")
        out[name] = value
    return out


def _context(request: PolicyRequest) -> dict[str, Any]:
    now = request.now
    utc = now.astimezone(dt.UTC)
    entitled = request.entitled_scopes
    context: dict[str, Any] = {
        "attested": bool(request.attested),
        "entitled": entitled is not None,
        "entitled_scopes": list(entitled or ()),
        "claims": _claims(request.claims),
        # Rounded up: a policy bounding the TTL must never see less than is asked for.
        "requested_ttl_seconds": math.ceil(request.requested_ttl.total_seconds()),
        "scopes": list(request.requested_scopes),
        "now": epoch(now),
        "utc_hour": utc.hour,
        "utc_weekday": utc.isoweekday(),
        # The environment the request is for: the identity's, which is declared per
        # environment. In the context so that policies can say `context.environment`.
        "environment": request.identity.environment,
    }
    for key, value in (
        ("issuer", request.issuer_id),
        ("task", request.task_id),
        ("task_name", request.task_name),
        ("intent", request.intent),
        ("source_ip", request.source_ip),
        ("actor", request.actor),
    ):
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"{key} must be a string")
            context[key] = value
    chain = request.delegation or ((request.actor,) if request.actor else ())
    if chain:
        context["delegation"] = list(chain)
        context["delegation_depth"] = len(chain)
    run = request.run
    if run is not None:
        described: dict[str, Any] = {
            "purpose": run.purpose,
            "tools": list(run.tools),
            "resources": list(run.resources),
            "data_classes": list(run.data_classes),
        }
        if run.principal is not None:
            described["principal"] = run.principal
            described["principal_type"] = run.principal_kind
        context["run"] = described
    if request.source_ip is not None:
        # Checked even when no policy reads it: a malformed request is denied.
        ipaddress.ip_address(request.source_ip)
    return context


def _unknown(name: str) -> dict[str, Any]:
    return {"__extn": {"fn": "unknown", "arg": name}}


def build(request: PolicyRequest, usage: ContextUsage) -> Built:
    """Cedar's view of a request; raises ValueError or TypeError on a malformed one."""
    context = _context(request)
    wanted = usage.attributes
    cedar = context if wanted is None else {k: v for k, v in context.items() if k in wanted}
    if "claims" in cedar and usage.claims is not None:
        cedar = {**cedar, "claims": {k: v for k, v in cedar["claims"].items() if k in usage.claims}}
    stable: list[Any] = []
    for key, value in cedar.items():
        if key in VOLATILE_CONTEXT:
            stable.append(key)  # only whether it is there: `context has intent`
        elif key == "claims":
            for name, claim in value.items():
                stable.append(
                    f"claims.{name}" if name in VOLATILE_CLAIMS else (f"claims.{name}", claim)
                )
        else:
            stable.append((key, tuple(value) if isinstance(value, list) else value))
    return Built(
        context=context,
        cedar=cedar,
        principal=_entity_json(request.identity, principal_entity),
        resource=_entity_json(request.profile, resource_entity),
        stable=tuple(stable),
    )


_ENTITY_CACHE_SIZE = 4096
_entity_cache: dict[int, tuple[object, str]] = {}


def _entity_json(item: Any, entity: Callable[[Any], dict[str, Any]]) -> str:
    """The entity's JSON, remembered per object: a server passes the same estate objects
    again and again, and they are frozen. The entry holds the object itself, so its id
    cannot be reused by another object while the entry exists."""
    cached = _entity_cache.get(id(item))
    if cached is not None and cached[0] is item:
        return cached[1]
    text = json.dumps(entity(item))
    if len(_entity_cache) >= _ENTITY_CACHE_SIZE:
        _entity_cache.clear()  # crude but bounded; refilling costs a json.dumps each
    _entity_cache[id(item)] = (item, text)
    return text


def partial_context(cedar: Mapping[str, Any]) -> dict[str, Any]:
    """The Cedar context with its volatile attributes unknown, for partial evaluation.

    Each unknown is named by its path (`context.intent`), so a residual policy can be
    turned back into one that reads the attribute.
    """
    out: dict[str, Any] = {}
    for key, value in cedar.items():
        if key in VOLATILE_CONTEXT:
            out[key] = _unknown(f"context.{key}")
        elif key == "claims":
            out[key] = {
                name: _unknown(f"context.claims.{name}") if name in VOLATILE_CLAIMS else claim
                for name, claim in value.items()
            }
        else:
            out[key] = value
    return out


def principal_entity(identity: Identity) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "kind": identity.kind.value,
        "owner": identity.owner_id,
        "purpose": identity.purpose,
        "justification": identity.justification,
        "environment": identity.environment,
        "criticality": identity.criticality.value,
        "status": identity.status.value,
        "has_approval": identity.approval is not None,
    }
    if identity.system is not None:
        attrs["system"] = identity.system
    if identity.region is not None:
        attrs["region"] = identity.region
    if identity.vendor_id is not None:
        attrs["vendor"] = identity.vendor_id
    if identity.approval is not None:
        expires = epoch(identity.approval.expires_at)
        attrs["approval"] = {"by": identity.approval.by, "expires": expires}
        attrs["approval_expires"] = expires
    if identity.expires_at is not None:
        attrs["expires"] = epoch(identity.expires_at)
    return {
        "uid": {"type": IDENTITY_TYPE, "id": identity.id},
        "attrs": attrs,
        "parents": [],
        "tags": dict(identity.labels),
    }


def resource_entity(profile: Profile) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "provider": profile.provider,
        "max_ttl_seconds": math.floor(profile.max_ttl.total_seconds()),
        "scopes": list(profile.scopes),
    }
    if profile.audience is not None:
        attrs["audience"] = profile.audience
    if profile.target is not None:
        attrs["target"] = profile.target
    return {"uid": {"type": PROFILE_TYPE, "id": profile.id}, "attrs": attrs, "parents": []}
