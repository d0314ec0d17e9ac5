"""Tether's own identities and profiles as the AuthZEN application `tether`.

The mapping to a policy decision (`tether.policy.PolicyEngine.evaluate`):

- subject `{type: identity | <kind>, id}`: the estate's identity (with a kind as the
  type, the identity must be of that kind);
- action `{name}`: `issue`, `renew`, `exchange`, or a key use (`encrypt`, `decrypt`, ...);
- resource `{type: profile, id}`: the estate's profile;
- context.attested (bool, default false): the PDP sees no evidence, so a PEP that
  verified it says so;
- context.scopes (list): the requested scopes (default: those the entitlement grants);
- context.ttl (a duration such as 15m): the requested TTL (default: the profile's cap,
  within the kind's);
- context.issuer, claims, task, task_name, intent, source_ip, actor: as in issuance.

The time is the node's; guard rails (status, approval, vendor, entitlement, TTL caps) apply
as they do to issuance, and the estate's policies with `tether:default` decide the rest.
Properties are not attributes here: Tether's identities and profiles are the estate's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tether._internal.timeutil import InvalidValue, parse_duration
from tether.authzen._model import Evaluation, Verdict
from tether.model import Identity, Kind, Profile, Vendor
from tether.policy import ALL_ACTIONS, Decision, PolicyEngine, PolicyRequest, entitled_scopes

IDENTITY_TYPE = "identity"
PROFILE_TYPE = "profile"
SUBJECT_TYPES = (IDENTITY_TYPE, *(k.value for k in Kind))
_STRINGS = ("issuer", "task", "task_name", "intent", "source_ip", "actor")


class _View(Protocol):
    """The estate view, as far as the adapter reads it."""

    @property
    def identities(self) -> Mapping[str, Identity]: ...
    @property
    def profiles(self) -> Mapping[str, Profile]: ...
    @property
    def vendors(self) -> Mapping[str, Vendor]: ...
    def control(self, kind: Kind) -> Any: ...


class _Refused(Exception):
    pass


def _verdict(decision: Decision) -> Verdict:
    return Verdict(decision.allowed, decision.policy_ids, decision.reasons, decision.errors)


class TetherApplication:
    """Decides AuthZEN requests about Tether's identities and profiles with Tether's policy."""

    id = "tether"

    def __init__(
        self,
        view: Callable[[], _View],
        engine: Callable[[], PolicyEngine | None],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._view = view
        self._engine = engine
        self._clock = clock

    def _identity(self, view: _View, subject_type: str, subject_id: str) -> Identity:
        if subject_type not in SUBJECT_TYPES:
            kinds = ", ".join(k.value for k in Kind)
            raise _Refused(f"subject.type must be {IDENTITY_TYPE} or a kind ({kinds})")
        identity = view.identities.get(subject_id)
        if identity is None or subject_type not in (IDENTITY_TYPE, identity.kind.value):
            raise _Refused(f"no {subject_type} {subject_id!r}")
        return identity

    def _request(self, view: _View, evaluation: Evaluation, now: dt.datetime) -> PolicyRequest:
        identity = self._identity(view, evaluation.subject.type, evaluation.subject.id)
        resource = evaluation.resource
        if resource.type != PROFILE_TYPE:
            raise _Refused(f"resource.type must be {PROFILE_TYPE}")
        profile = view.profiles.get(resource.id)
        if profile is None:
            raise _Refused(f"no profile {resource.id!r}")
        action = evaluation.action.name
        if action not in ALL_ACTIONS:
            raise _Refused(f"action.name must be one of {', '.join(ALL_ACTIONS)}")
        context = evaluation.context
        control = view.control(identity.kind)
        entitled = entitled_scopes(identity, profile)
        scopes = context.get("scopes")
        if scopes is None:
            scopes = list(entitled if entitled is not None else ())
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _Refused("context.scopes must be a list of strings")
        ttl: dt.timedelta = min(profile.max_ttl, control.max_ttl)
        if "ttl" in context:
            try:
                ttl = parse_duration(context["ttl"])
            except (InvalidValue, TypeError) as exc:
                raise _Refused(f"context.ttl: {exc}") from None
        attested = context.get("attested", False)
        if not isinstance(attested, bool):
            raise _Refused("context.attested must be true or false")
        claims = context.get("claims", {})
        if not isinstance(claims, dict) or not all(isinstance(v, str) for v in claims.values()):
            raise _Refused("context.claims must be an object of strings")
        strings: dict[str, str | None] = {}
        for name in _STRINGS:
            value = context.get(name)
            if value is not None and not isinstance(value, str):
                raise _Refused(f"context.{name} must be a string")
            strings[name] = value
        vendor = view.vendors.get(identity.vendor_id) if identity.vendor_id else None
        return PolicyRequest(
            identity=identity,
            action=action,
            profile=profile,
            entitled_scopes=entitled,
            requested_scopes=tuple(scopes),
            requested_ttl=ttl,
            now=now,
            vendor=vendor,
            attested=attested,
            issuer_id=strings["issuer"],
            claims=claims,
            task_id=strings["task"],
            task_name=strings["task_name"],
            intent=strings["intent"],
            source_ip=strings["source_ip"],
            actor=strings["actor"],
            kind_max_ttl=control.max_ttl,
            attestation_required=control.attestation_required,
            attestation_rule=identity.attest is not None,
        )

    def evaluate_many(self, evaluations: Sequence[Evaluation]) -> list[Verdict]:
        engine = self._engine()
        if engine is None:
            return [Verdict(False, (), ("the policy set failed to compile; denied",))] * len(
                evaluations
            )
        view, now = self._view(), self._clock()
        out: dict[int, Verdict] = {}
        positions: list[int] = []
        requests: list[PolicyRequest] = []
        for position, evaluation in enumerate(evaluations):
            try:
                requests.append(self._request(view, evaluation, now))
                positions.append(position)
            except _Refused as exc:
                out[position] = Verdict(False, (), (f"denied: {exc}",))
        for position, decision in zip(positions, engine.evaluate_many(requests), strict=True):
            out[position] = _verdict(decision)
        return [out[p] for p in range(len(evaluations))]

    def candidates(self, kind: str, type_: str) -> Sequence[str]:
        view = self._view()
        if kind == "action":
            return ALL_ACTIONS
        if kind == "resource":
            return sorted(view.profiles) if type_ == PROFILE_TYPE else ()
        if type_ == IDENTITY_TYPE:
            return sorted(view.identities)
        if type_ in SUBJECT_TYPES:
            return sorted(i for i, x in view.identities.items() if x.kind.value == type_)
        return ()
