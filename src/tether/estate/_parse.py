"""From a parsed estate document to a validated `Estate`, or every problem with it."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from tether._internal.timeutil import InvalidValue, parse_duration, parse_time
from tether.estate.errors import EstateInvalid, Problem
from tether.model import (
    KIND_CONTROL_DEFAULTS,
    Estate,
    Identity,
    Issuer,
    Kind,
    Owner,
    Policy,
    Profile,
    Vendor,
)
from tether.policy import validate_policies

#: Providers that mint for an audience, and those that talk to a registered target.
_AUDIENCE_PROVIDERS = {"jwt", "jwt-svid"}
_TARGET_PROVIDERS = {"postgres", "redis"}


@functools.cache
def estate_schema() -> dict[str, Any]:
    """The published JSON Schema of the estate file."""
    text = resources.files("tether.estate").joinpath("estate.schema.json").read_text()
    return dict(json.loads(text))


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where a final `$` is the end of the text. In
    # Python it also matches before a trailing newline, so "team-a\n" would pass `^...$`.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError("does not match the pattern")


_EstateValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"pattern": _pattern}
)


@functools.cache
def _validator() -> Any:
    return _EstateValidator(estate_schema())


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _schema_problems(error: ValidationError) -> list[Problem]:
    where = list(error.absolute_path)
    v = error.validator
    arg: Any = error.validator_value
    instance: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if v == "required":
        # One problem per missing field: several missing fields are several problems.
        missing = [name for name in arg if name not in instance] or [arg[0]]
        return [Problem(_path([*where, name]), "is required") for name in missing]
    if v == "additionalProperties":
        allowed = set(schema.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in allowed) or ["?"]
        return [Problem(_path([*where, name]), "is not a known field") for name in extra]
    if "propertyNames" in error.schema_path and isinstance(instance, str):
        return [Problem(_path([*where, instance]), "is not an allowed key")]
    if v == "oneOf":
        # The form the value has (say, an object) decides which branch's errors to show,
        # so a missing or unknown field inside it is named, not just the whole item.
        inner = [e for e in error.context or () if e.validator != "type"]
        if inner:
            return [p for e in inner for p in _schema_problems(e)]
    messages: dict[str, Callable[[], str]] = {
        "type": lambda: f"must be of type {arg}",
        "enum": lambda: "must be one of: " + ", ".join(str(x) for x in arg),
        "const": lambda: f"must be {arg!r}",
        "pattern": lambda: (
            schema.get("description") or "contains characters or a form that is not allowed"
        ),
        "maxLength": lambda: f"is longer than {arg} characters",
        "minLength": lambda: "must not be empty" if arg == 1 else f"is shorter than {arg}",
        "maxItems": lambda: f"has more than {arg} items",
        "minItems": lambda: f"needs at least {arg} item(s)",
        "maxProperties": lambda: f"has more than {arg} entries",
        "propertyNames": lambda: "has a key that is not allowed",
        "oneOf": lambda: "is not in any of the accepted forms",
    }
    make = messages.get(str(v))
    return [Problem(_path(where), make() if make else "is not valid")]


def _grants_problem(provider: str, grants: Any) -> str | None:
    """The target provider's own reading of a profile's grants, so `apply` refuses what
    issuance would refuse later."""
    from tether.providers import _postgres, _redis

    module = _postgres if provider == "postgres" else _redis
    try:
        module.parse_grants(grants)
    except module.InvalidGrants as exc:
        return str(exc)
    return None


class _Checker:
    """Collects semantic problems so one refusal names every bad field."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def duplicates(self, section: str, items: Sequence[dict[str, Any]]) -> None:
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item["id"] in seen:
                self.add(f"{section}[{index}].id", f"duplicate id {item['id']!r}")
            seen.add(item["id"])

    def duration(self, path: str, value: str) -> None:
        try:
            parse_duration(value)
        except InvalidValue as exc:
            self.add(path, str(exc))

    def time(self, path: str, value: str) -> None:
        try:
            parse_time(value)
        except InvalidValue as exc:
            self.add(path, str(exc))


def parse_estate(document: Any) -> Estate:
    """Validate an estate document (as parsed from YAML/JSON). Raise with every problem."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        problems = list(dict.fromkeys(p for e in errors for p in _schema_problems(e)))
        raise EstateInvalid(problems)

    check = _Checker()
    doc: dict[str, Any] = document
    owners = doc.get("owners", [])
    vendors = doc.get("vendors", [])
    issuers = doc.get("issuers", [])
    profiles = doc.get("profiles", [])
    identities = doc.get("identities", [])
    for section, items in (
        ("owners", owners),
        ("vendors", vendors),
        ("issuers", issuers),
        ("profiles", profiles),
        ("identities", identities),
    ):
        check.duplicates(section, items)

    for i, vendor in enumerate(vendors):
        check.time(f"vendors[{i}].contract_ends", vendor["contract_ends"])
    for i, issuer in enumerate(issuers):
        if "jwks" in issuer and "jwks_uri" in issuer:
            check.add(f"issuers[{i}]", "give jwks_uri or an inline jwks, not both")
    for i, profile in enumerate(profiles):
        check.duration(f"profiles[{i}].max_ttl", profile["max_ttl"])
        provider = profile["provider"]
        if provider in _AUDIENCE_PROVIDERS and "audience" not in profile:
            check.add(f"profiles[{i}].audience", f"is required for provider {provider}")
        if provider in _TARGET_PROVIDERS and "target" not in profile:
            check.add(f"profiles[{i}].target", f"is required for provider {provider}")
        if provider in _TARGET_PROVIDERS and "grants" in profile:
            grants_problem = _grants_problem(provider, profile["grants"])
            if grants_problem is not None:
                where, _, why = grants_problem.partition(": ")
                check.add(f"profiles[{i}].{where}", why)

    kind_overrides: dict[Kind, dict[str, Any]] = {}
    for kind_name, overrides in doc.get("kinds", {}).items():
        for field in ("max_ttl", "rotate_every", "review_every"):
            if field in overrides:
                check.duration(f"kinds.{kind_name}.{field}", overrides[field])
        kind_overrides[Kind(kind_name)] = dict(overrides)

    owner_ids = {o["id"] for o in owners}
    vendor_ids = {v["id"] for v in vendors}
    issuer_ids = {i["id"] for i in issuers}
    profile_scopes = {p["id"]: set(p.get("scopes", [])) for p in profiles}
    for i, identity in enumerate(identities):
        where = f"identities[{i}]"
        kind = Kind(identity["kind"])
        try:
            control = KIND_CONTROL_DEFAULTS[kind].with_overrides(kind_overrides.get(kind, {}))
        except InvalidValue:
            control = KIND_CONTROL_DEFAULTS[kind]  # the bad override is reported under kinds
        if identity["owner"] not in owner_ids:
            check.add(f"{where}.owner", f"unknown owner {identity['owner']!r}")
        if "vendor" in identity and identity["vendor"] not in vendor_ids:
            check.add(f"{where}.vendor", f"unknown vendor {identity['vendor']!r}")
        if "approval" in identity:
            check.time(f"{where}.approval.expires", identity["approval"]["expires"])
        if "expires" in identity:
            check.time(f"{where}.expires", identity["expires"])
        attest = identity.get("attest")
        if attest is not None and attest["issuer"] not in issuer_ids:
            check.add(f"{where}.attest.issuer", f"unknown issuer {attest['issuer']!r}")
        if attest is None and control.attestation_required:
            check.add(f"{where}.attest", f"is required for kind {kind.value}")
        allowed = control.allowed_environments
        if allowed is not None and identity["environment"] not in allowed:
            check.add(
                f"{where}.environment",
                f"kind {kind.value} allows only: {', '.join(allowed)}",
            )
        seen_profiles: set[str] = set()
        for j, entitlement in enumerate(identity.get("entitlements", [])):
            spec = {"profile": entitlement} if isinstance(entitlement, str) else entitlement
            path = f"{where}.entitlements[{j}]"
            profile_id = spec["profile"]
            if profile_id not in profile_scopes:
                check.add(f"{path}.profile", f"unknown profile {profile_id!r}")
                continue
            if profile_id in seen_profiles:
                check.add(f"{path}.profile", f"profile {profile_id!r} is granted twice")
            seen_profiles.add(profile_id)
            extra = sorted(set(spec.get("scopes", [])) - profile_scopes[profile_id])
            if extra:
                check.add(
                    f"{path}.scopes",
                    f"can only narrow the profile's scopes; not in {profile_id}: "
                    + ", ".join(extra),
                )

    policies: list[Policy] = []
    positions: list[int] = []  # index in the file's `policies` of each inlined policy
    for i, entry in enumerate(doc.get("policies", [])):
        if isinstance(entry, str):
            check.add(
                f"policies[{i}]", f"the content of {entry!r} was not sent (use `tether apply -f`)"
            )
        else:
            policies.append(Policy(id=entry["id"], source=entry["source"]))
            positions.append(i)
    if len({p.id for p in policies}) != len(policies):
        check.add("policies", "the same policy file is listed twice")
    else:
        # Parsed and validated against Tether's Cedar schema now, so a bad policy is
        # refused with its id before anything is stored (invariant 4: fail closed).
        for problem in validate_policies(policies):
            check.add(f"policies[{positions[problem.index]}]", problem.message)

    if check.problems:
        raise EstateInvalid(check.problems)
    return Estate(
        owners=tuple(Owner.from_spec(o) for o in owners),
        vendors=tuple(Vendor.from_spec(v) for v in vendors),
        issuers=tuple(Issuer.from_spec(i) for i in issuers),
        profiles=tuple(Profile.from_spec(p) for p in profiles),
        identities=tuple(Identity.from_spec(i) for i in identities),
        kind_overrides=kind_overrides,
        policies=tuple(policies),
    )
