"""The policy decision every key use asks for, and its Cedar adapter.

The service calls a `KeyDecider` with a `KeyUseRequest` (the user principal, the action,
the key) and allows only an object whose `allowed` is True: an exception, None or
anything else denies (fail closed).

`cedar_decider` decides with the estate's Cedar policies, through the existing
entitlement machinery: an identity is entitled to a key by a profile of provider `key`
whose `target` is the key's name, and whose `scopes` are the actions it permits:

    profiles:
      - {id: orders-dek-use, provider: key, target: orders-dek, scopes: [encrypt, decrypt]}
    identities:
      - id: orders-api
        entitlements: [{profile: orders-dek-use, scopes: [decrypt]}]

The Cedar request is principal `Tether::Identity::"orders-api"`, action
`Tether::Action::"decrypt"` (one of KEY_ACTIONS), resource `Tether::Profile::
"orders-dek-use"`, the usual context with `scopes = [action]`. The guard rails apply
(identity active, approval and vendor in force, entitled, the action among the profile's
and the entitlement's scopes, attestation if the kind requires it); `tether:default`
permits an attested, entitled caller; user policies add conditions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tether.keys._model import Key, KeyUser
from tether.model import Identity, Profile, Vendor
from tether.policy import KEY_ACTIONS, KEY_PROVIDER, PolicyEngine, PolicyRequest, entitled_scopes


@dataclass(frozen=True, slots=True)
class KeyUseRequest:
    principal: KeyUser
    #: encrypt | decrypt | sign | verify | hmac | datakey | rewrap
    action: str
    key: Key
    now: dt.datetime


class DecisionLike(Protocol):
    @property
    def allowed(self) -> bool: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def policy_ids(self) -> tuple[str, ...]: ...


KeyDecider = Callable[[KeyUseRequest], DecisionLike | None]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reasons: tuple[str, ...]
    policy_ids: tuple[str, ...]


def decide_safely(decider: KeyDecider, request: KeyUseRequest) -> Verdict:
    """Fail closed: only a decision whose `allowed` is exactly True allows."""
    try:
        decision = decider(request)
    except Exception as exc:
        return Verdict(False, (f"the policy decision failed ({type(exc).__name__}); denied",), ())
    if decision is None:
        return Verdict(False, ("no policy decision was made; denied",), ())
    try:
        allowed = decision.allowed is True
        reasons = tuple(str(r) for r in decision.reasons)
        policy_ids = tuple(str(p) for p in decision.policy_ids)
    except Exception:
        return Verdict(False, ("the policy decision was malformed; denied",), ())
    if not allowed and not reasons:
        reasons = ("denied by policy",)
    return Verdict(allowed, reasons, policy_ids)


def key_profiles(profiles: Mapping[str, Profile], key_name: str) -> list[Profile]:
    return sorted(
        (p for p in profiles.values() if p.provider == KEY_PROVIDER and p.target == key_name),
        key=lambda p: p.id,
    )


class _Deny:
    __slots__ = ("policy_ids", "reasons")

    allowed = False

    def __init__(self, reason: str) -> None:
        self.reasons = (reason,)
        self.policy_ids: tuple[str, ...] = ()


def cedar_decider(
    engine: Callable[[], PolicyEngine | None],
    identity_of: Callable[[str], Identity | None],
    profiles: Callable[[], Mapping[str, Profile]],
    *,
    vendor_of: Callable[[Identity], Vendor | None] = lambda _identity: None,
    attestation_required: Callable[[Identity], bool] = lambda _identity: False,
) -> KeyDecider:
    """A KeyDecider over the current policy engine and estate (each read per call).

    App wiring: `cedar_decider(lambda: node.policy.engine, view.identities.get,
    lambda: view.profiles, vendor_of=..., attestation_required=lambda i:
    view.control(i.kind).attestation_required)`.
    """
    # A key profile that lists no scopes permits every action its key type has: one
    # copy per profile object, so the policy engine's per-object caches keep working.
    widened: dict[int, tuple[Profile, Profile]] = {}

    def _scoped(profile: Profile) -> Profile:
        if profile.scopes:
            return profile
        held = widened.get(id(profile))
        if held is not None and held[0] is profile:
            return held[1]
        copy = dataclasses.replace(profile, scopes=KEY_ACTIONS)
        if len(widened) > 4096:
            widened.clear()
        widened[id(profile)] = (profile, copy)
        return copy

    def decide(request: KeyUseRequest) -> Any:
        policy = engine()
        if policy is None:
            return _Deny("the policy set failed to compile; every key use is denied")
        principal = request.principal
        identity = identity_of(principal.identity_id)
        if identity is None:
            return _Deny(f"identity {principal.identity_id} is not in the estate")
        candidates = [_scoped(p) for p in key_profiles(profiles(), request.key.name)]
        if not candidates:
            return _Deny(
                f"no profile of provider {KEY_PROVIDER} names key {request.key.name} "
                "as its target, so no identity is entitled to it"
            )
        chosen = candidates[0]
        for profile in candidates:
            scopes = entitled_scopes(identity, profile)
            if scopes is not None and request.action in scopes:
                chosen = profile
                break
        return policy.evaluate(
            PolicyRequest(
                identity=identity,
                action=request.action,
                profile=chosen,
                entitled_scopes=entitled_scopes(identity, chosen),
                requested_scopes=(request.action,),
                requested_ttl=dt.timedelta(0),
                now=request.now,
                vendor=vendor_of(identity),
                attested=principal.attested,
                issuer_id=principal.issuer_id,
                claims=principal.claims,
                task_id=principal.task_id,
                task_name=principal.task_name,
                intent=principal.intent,
                source_ip=principal.source_ip,
                attestation_required=attestation_required(identity),
                attestation_rule=identity.attest is not None,
            )
        )

    return decide
