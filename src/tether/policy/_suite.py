"""Policy tests: JSON cases run offline against a policy set (`tether policy test`).

A suite file:

    {
      "policies": ["policies/base.cedar"],      // optional, relative to the suite file
      "default_policy": true,                   // optional; false tests the set alone
      "defaults": {"now": "2026-06-01T12:00:00Z"},  // optional, under every request
      "cases": [
        {"name": "deployer reads orders",
         "request": {"identity": "payments-deployer", "profile": "orders-api-read"},
         "expect": "allow",
         "reasons": ["tether:default"]}          // optional: must be among the deciding ids
      ]
    }

A request names its identity and profile by estate id (with `--estate`) or describes
them inline in the estate's own form; an inline object whose `id` is an estate id
starts from that estate object, so `{"id": "payments-deployer", "status": "retired"}`
is a one-field variation. Everything else has a default that makes the request an
ordinary, well-formed one, so a case states only what it is about:

    action      issue
    attested    true
    entitled    from the identity's entitlements; an inline identity without any is
                entitled to the whole profile. true, false or a list of scopes overrides.
    scopes      the entitled scopes (the profile's, if not entitled)
    ttl         the profile's max_ttl, capped by the kind's
    now         the current time
    vendor      the identity's vendor from the estate (an id or an inline object)
    kind_max_ttl, attestation_required   from the kind's control profile
    issuer, claims, task, task_name, intent, source_ip, actor   absent
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether._internal.timeutil import InvalidValue, parse_duration, parse_time, utcnow
from tether.model import Estate, Identity, Policy, Profile, Vendor
from tether.policy._engine import PolicyEngine
from tether.policy._request import Decision, PolicyRequest, entitled_scopes
from tether.policy.errors import PolicyTestInvalid

EXPECTATIONS = ("allow", "deny")
_SUITE_KEYS = {"policies", "default_policy", "defaults", "cases"}
_CASE_KEYS = {"name", "request", "expect", "reasons"}
_REQUEST_KEYS = {
    "identity",
    "profile",
    "action",
    "attested",
    "entitled",
    "scopes",
    "ttl",
    "now",
    "vendor",
    "kind_max_ttl",
    "attestation_required",
    "issuer",
    "claims",
    "task",
    "task_name",
    "intent",
    "source_ip",
    "actor",
}
_IDENTITY_DEFAULTS = {
    "id": "test-identity",
    "kind": "workload",
    "owner": "test-owner",
    "purpose": "policy test",
    "justification": "policy test",
    "environment": "prod",
}
_PROFILE_DEFAULTS = {"id": "test-profile", "provider": "token", "max_ttl": "1h"}
_VENDOR_DEFAULTS = {"id": "test-vendor", "contract_ends": "2999-12-31"}


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    request: PolicyRequest
    expect: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Suite:
    #: Policy file paths as written in the suite, relative to it.
    policies: tuple[str, ...]
    default_policy: bool
    cases: tuple[Case, ...]


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    expect: str
    decision: Decision
    #: Expected deciding ids that did not decide.
    missing: tuple[str, ...]

    @property
    def got(self) -> str:
        return "allow" if self.decision.allowed else "deny"

    @property
    def passed(self) -> bool:
        return self.got == self.expect and not self.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expect": self.expect,
            "got": self.got,
            "passed": self.passed,
            "policy_ids": list(self.decision.policy_ids),
            "reasons": list(self.decision.reasons),
            "errors": list(self.decision.errors),
            "missing_reasons": list(self.missing),
        }


def _fail(where: str, message: str) -> PolicyTestInvalid:
    return PolicyTestInvalid(f"{where}: {message}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be an object")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "must be a list of strings")
    return tuple(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "must be a string")
    return value


def _unknown_keys(value: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(value) - allowed)
    if extra:
        raise _fail(f"{where}.{extra[0]}", "is not a known field")


class _Resolver:
    """Turns a case's request object into a PolicyRequest, the estate filling in."""

    def __init__(self, estate: Estate | None) -> None:
        self.estate = estate or Estate()
        self.identities = {i.id: i for i in self.estate.identities}
        self.profiles = {p.id: p for p in self.estate.profiles}
        self.vendors = {v.id: v for v in self.estate.vendors}

    def _build(
        self,
        value: Any,
        where: str,
        known: Mapping[str, Any],
        defaults: Mapping[str, Any],
        make: Callable[[Mapping[str, Any]], Any],
        what: str,
    ) -> Any:
        if isinstance(value, str):
            if value not in known:
                hint = "" if self.estate.identities or self.estate.profiles else " (use --estate)"
                raise _fail(where, f"unknown {what} {value!r}{hint}")
            return known[value]
        spec = _object(value, where)
        base = known[spec["id"]].to_spec() if spec.get("id") in known else dict(defaults)
        try:
            return make({**base, **spec})
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise _fail(where, f"not a valid {what}: {exc}") from None

    def request(self, raw: Mapping[str, Any], where: str) -> PolicyRequest:
        _unknown_keys(raw, _REQUEST_KEYS, where)
        identity: Identity = self._build(
            raw.get("identity", {}),
            f"{where}.identity",
            self.identities,
            _IDENTITY_DEFAULTS,
            Identity.from_spec,
            "identity",
        )
        profile: Profile = self._build(
            raw.get("profile", {}),
            f"{where}.profile",
            self.profiles,
            _PROFILE_DEFAULTS,
            Profile.from_spec,
            "profile",
        )
        control = self.estate.control_profile(identity.kind)

        entitled: tuple[str, ...] | None
        if "entitled" in raw:
            value = raw["entitled"]
            if value is True:
                entitled = profile.scopes
            elif value is False:
                entitled = None
            else:
                entitled = _strings(value, f"{where}.entitled")
        elif identity.entitlements:
            entitled = entitled_scopes(identity, profile)
        else:
            entitled = profile.scopes

        vendor: Vendor | None = None
        if "vendor" in raw:
            vendor = self._build(
                raw["vendor"],
                f"{where}.vendor",
                self.vendors,
                _VENDOR_DEFAULTS,
                Vendor.from_spec,
                "vendor",
            )
        elif identity.vendor_id is not None:
            vendor = self.vendors.get(identity.vendor_id)

        def duration(key: str, default: dt.timedelta) -> dt.timedelta:
            if key not in raw:
                return default
            try:
                return parse_duration(raw[key])
            except InvalidValue as exc:
                raise _fail(f"{where}.{key}", str(exc)) from None

        def optional(key: str) -> str | None:
            return None if raw.get(key) is None else _string(raw[key], f"{where}.{key}")

        now = utcnow()
        if "now" in raw:
            try:
                now = parse_time(raw["now"])
            except InvalidValue as exc:
                raise _fail(f"{where}.now", str(exc)) from None
        claims = _object(raw.get("claims", {}), f"{where}.claims")
        for name, claim in claims.items():
            _string(claim, f"{where}.claims.{name}")
        attested = raw.get("attested", True)
        required = raw.get("attestation_required", control.attestation_required)
        for key, flag in (("attested", attested), ("attestation_required", required)):
            if not isinstance(flag, bool):
                raise _fail(f"{where}.{key}", "must be true or false")
        action = _string(raw.get("action", "issue"), f"{where}.action")
        scopes = raw.get("scopes")
        return PolicyRequest(
            identity=identity,
            action=action,
            profile=profile,
            entitled_scopes=entitled,
            requested_scopes=(
                (entitled if entitled is not None else profile.scopes)
                if scopes is None
                else _strings(scopes, f"{where}.scopes")
            ),
            requested_ttl=duration("ttl", min(profile.max_ttl, control.max_ttl)),
            now=now,
            vendor=vendor,
            attested=attested,
            issuer_id=optional("issuer"),
            claims=claims,
            task_id=optional("task"),
            task_name=optional("task_name"),
            intent=optional("intent"),
            source_ip=optional("source_ip"),
            actor=optional("actor"),
            kind_max_ttl=duration("kind_max_ttl", control.max_ttl),
            attestation_required=required,
        )


def load_suite(document: Any, estate: Estate | None = None) -> Suite:
    """Read a suite document (parsed JSON); raise PolicyTestInvalid naming the bad field."""
    suite = _object(document, "(file)")
    _unknown_keys(suite, _SUITE_KEYS, "(file)")
    policies = _strings(suite.get("policies", []), "policies")
    default_policy = suite.get("default_policy", True)
    if not isinstance(default_policy, bool):
        raise _fail("default_policy", "must be true or false")
    defaults = _object(suite.get("defaults", {}), "defaults")
    raw_cases = suite.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise _fail("cases", "must be a non-empty list")
    resolver = _Resolver(estate)
    cases = []
    for index, raw in enumerate(raw_cases):
        where = f"cases[{index}]"
        case = _object(raw, where)
        _unknown_keys(case, _CASE_KEYS, where)
        name = _string(case.get("name", f"case {index + 1}"), f"{where}.name")
        expect = case.get("expect")
        if expect not in EXPECTATIONS:
            raise _fail(f"{where}.expect", "must be allow or deny")
        request = {**defaults, **_object(case.get("request", {}), f"{where}.request")}
        cases.append(
            Case(
                name=name,
                request=resolver.request(request, f"{where}.request"),
                expect=str(expect),
                reasons=_strings(case.get("reasons", []), f"{where}.reasons"),
            )
        )
    return Suite(policies, default_policy, tuple(cases))


def _decided_by(decision: Decision, wanted: str) -> bool:
    # A file's id stands for every statement in it (`base.cedar` matches `base.cedar#2`).
    return any(p == wanted or p.startswith(wanted + "#") for p in decision.policy_ids)


def run_suite(
    cases: Sequence[Case], policies: Sequence[Policy], default_policy: bool = True
) -> list[CaseResult]:
    """Compile `policies` (PolicyInvalid if they are bad) and decide every case."""
    engine = PolicyEngine.compile(policies, include_default=default_policy)
    decisions = engine.evaluate_many([case.request for case in cases])
    return [
        CaseResult(
            name=case.name,
            expect=case.expect,
            decision=decision,
            missing=tuple(r for r in case.reasons if not _decided_by(decision, r)),
        )
        for case, decision in zip(cases, decisions, strict=True)
    ]
