"""Guard rails: conditions no estate policy can lift, checked in Python before Cedar runs.

They make invariant 3 (bounded by every justification) hold whatever the policies say:
a user `permit (principal, action, resource);` still cannot issue to a retired identity,
past an approval, beyond an entitlement, or for longer than the profile or kind allow.
Each violation has a stable id (`guardrail:<name>`) and a sentence fit for an OAuth
`error_description`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tether._internal.timeutil import format_duration
from tether.model import identity_problems
from tether.policy._schema import ALL_ACTIONS, KEY_ACTIONS, KEY_PROVIDER

if TYPE_CHECKING:
    from tether.policy._request import PolicyRequest


@dataclass(frozen=True, slots=True)
class Violation:
    id: str
    reason: str


def _list(values: Iterable[str]) -> str:
    return ", ".join(values)


def _ttl(seconds: float) -> str:
    # format_duration reads whole seconds; a sub-second TTL is shown as such.
    return format_duration(dt.timedelta(seconds=seconds)) if seconds >= 1 else f"{seconds}s"


def check(request: PolicyRequest) -> list[Violation]:
    """Every guard rail the request breaks, in a fixed order (empty if none)."""
    out: list[Violation] = []
    identity = request.identity
    profile = request.profile
    now = request.now

    def add(name: str, reason: str) -> None:
        out.append(Violation(f"guardrail:{name}", reason))

    out.extend(_action_violations(request))
    # The identity's own justification: the rule issuance and the sweep apply too.
    for problem in identity_problems(identity, now, request.vendor):
        add(problem.code, problem.reason)
    if request.attestation_required and not request.attestation_rule:
        # `apply` accepts such an identity (the inventory holds the estate as it is, and
        # governance reports it as insecure authentication); it is never issued to.
        add(
            "attestation-rule-missing",
            f"identity {identity.id} is of kind {identity.kind.value}, which must be attested, "
            "and has no attestation rule",
        )
    elif request.attestation_required and not request.attested:
        add(
            "attestation-required",
            f"identity {identity.id} is of kind {identity.kind.value}, which must be attested; "
            "this request carries no verified attestation",
        )

    entitled = request.entitled_scopes
    if entitled is None:
        add("not-entitled", f"identity {identity.id} is not entitled to profile {profile.id}")
    requested = request.requested_scopes
    outside_profile = [s for s in dict.fromkeys(requested) if s not in profile.scopes]
    if outside_profile:
        add(
            "scope-not-in-profile",
            f"profile {profile.id} does not offer scope(s): {_list(outside_profile)}",
        )
    if entitled is not None:
        beyond = [
            s for s in dict.fromkeys(requested) if s not in entitled and s not in outside_profile
        ]
        if beyond:
            granted = _list(entitled) if entitled else "none"
            add(
                "scope-not-entitled",
                f"identity {identity.id} is not entitled to scope(s) {_list(beyond)} "
                f"of profile {profile.id} (entitled: {granted})",
            )

    out.extend(_intent_violations(request))
    if request.action in KEY_ACTIONS:
        return out  # a key use mints nothing: no TTL to bound
    ttl = request.requested_ttl.total_seconds()
    if ttl <= 0:
        add("ttl-not-positive", "the requested TTL must be longer than zero")
    else:
        if request.requested_ttl > profile.max_ttl:
            add(
                "ttl-exceeds-profile",
                f"requested TTL {_ttl(ttl)} exceeds profile {profile.id}'s maximum of "
                f"{format_duration(profile.max_ttl)}",
            )
        cap = request.kind_max_ttl
        if cap is not None and request.requested_ttl > cap:
            add(
                "ttl-exceeds-kind",
                f"requested TTL {_ttl(ttl)} exceeds the {_ttl(cap.total_seconds())} cap "
                f"for kind {identity.kind.value}",
            )
    return out


def _action_violations(request: PolicyRequest) -> list[Violation]:
    """The action is known, and matches the kind of profile: key uses only on profiles
    of provider `key`, issuance never from one."""
    action, profile = request.action, request.profile
    if action not in ALL_ACTIONS:
        reason = f"unknown action {action!r}; expected one of: {_list(ALL_ACTIONS)}"
        return [Violation("guardrail:unknown-action", reason)]
    if action in KEY_ACTIONS and profile.provider != KEY_PROVIDER:
        reason = f"{action} is a key use; profile {profile.id} is not of provider {KEY_PROVIDER}"
        return [Violation("guardrail:not-a-key-profile", reason)]
    if action not in KEY_ACTIONS and profile.provider == KEY_PROVIDER:
        reason = f"profile {profile.id} entitles to a key's use; nothing is issued from it"
        return [Violation("guardrail:key-profile-not-issued", reason)]
    return []


def _intent_violations(request: PolicyRequest) -> list[Violation]:
    """An agent run gets only what it declared: its tools (profiles) and, when it names
    them, its resources (what a profile's credential reaches: its audience or target)."""
    run, profile = request.run, request.profile
    if run is None:
        return []
    out = []
    if profile.id not in run.tools:
        declared = _list(run.tools) or "none"
        out.append(
            Violation(
                "guardrail:outside-intent",
                f"tool {profile.id} is outside the run's declared intent (tools: {declared})",
            )
        )
    reach = [r for r in (profile.audience, profile.target) if r]
    if run.resources and reach and not any(r in run.resources for r in reach):
        out.append(
            Violation(
                "guardrail:outside-intent",
                f"{_list(reach)} is outside the run's declared resources ({_list(run.resources)})",
            )
        )
    return out
