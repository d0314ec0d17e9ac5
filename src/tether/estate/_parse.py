"""From a parsed estate document to a validated `Estate`, or the problems with it.

One request, bounded work: validation stops once it has found `MAX_COUNTED` problems and
a refusal lists the first `MAX_REPORTED`. Schema errors are drawn from the validator one
at a time, the size limits of lists and mappings are checked before their contents, and
nothing past a limit is looked at, so a million bad items cost as much as a thousand.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from tether._internal.fieldpath import field_path
from tether._internal.ids import SAFE_ID_PATTERN, SAFE_ID_RULE
from tether._internal.timeutil import InvalidValue, parse_duration, parse_time
from tether.estate.errors import MAX_COUNTED, EstateInvalid, Problem
from tether.model import (
    DEFAULT_ENVIRONMENTS,
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
from tether.providers import LOCAL_PROVIDERS
from tether.targets import InvalidGrants, kind_names, target_kind

#: Providers that mint for an audience.
_AUDIENCE_PROVIDERS = {"jwt"}
#: Providers the design names that nothing implements yet: a profile naming one is refused
#: as "not implemented yet" rather than as a typo (a later issue brings the SVIDs).
_NOT_YET_IMPLEMENTED = ("static", "x509-svid", "jwt-svid")


def profile_providers() -> tuple[str, ...]:
    """What a profile's `provider` may be: an in-process provider or a target kind."""
    return (*LOCAL_PROVIDERS, *kind_names())


def estate_schema() -> dict[str, Any]:
    """The published JSON Schema of the estate file. The profile providers it allows are
    filled in from the providers and the registry of target kinds, never listed twice."""
    return _schema(profile_providers())


@functools.cache
def _schema(providers: tuple[str, ...]) -> dict[str, Any]:
    # Keyed by the providers, so a kind registered later (a plug-in) is accepted too.
    text = resources.files("tether.estate").joinpath("estate.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    schema["properties"]["profiles"]["items"]["properties"]["provider"]["enum"] = list(providers)
    return schema


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where a final `$` is the end of the text. In
    # Python it also matches before a trailing newline, so "team-a\n" would pass `^...$`.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


# -- keywords, bounded --
#
# jsonschema's own keywords put `repr(instance)` in every message (the whole list, for a
# list that is too long), look at every item of a list or key of a mapping however far
# past its limit, and collect every error of every `oneOf` branch. These do none of that.
# The messages are never shown: `_schema_problems` writes its own from the keyword.

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError]]
_STANDARD: dict[str, Keyword] = dict(jsonschema.Draft202012Validator.VALIDATORS)


def _limit(schema: dict[str, Any], keyword: str) -> int | None:
    value = schema.get(keyword)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _checked(size: int, schema: dict[str, Any], keyword: str) -> int:
    """How many of a list's items (a mapping's keys) to look at: all of them, unless there
    are more than the `maxItems` (`maxProperties`) limit allows. Then the refusal is
    certain and the first MAX_COUNTED are a sample enough to show what else is wrong:
    a list of a million items is refused for the cost of a thousand, valid or not."""
    limit = _limit(schema, keyword)
    return size if limit is None or size <= limit else min(limit, MAX_COUNTED)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    limit = _limit(schema, "maxLength")
    if limit is not None and len(instance) > limit:
        return  # `maxLength` refuses it; a megabyte is not worth matching
    if not _compiled(pattern).search(instance):
        yield ValidationError("does not match the pattern")


def _type(
    validator: Any, types: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    wanted = types if isinstance(types, list) else [types]
    if not any(validator.is_type(instance, t) for t in wanted):
        yield ValidationError("is not of the type")


def _max_items(
    validator: Any, limit: int, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "array") and len(instance) > limit:
        yield ValidationError("has too many items")


def _max_properties(
    validator: Any, limit: int, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "object") and len(instance) > limit:
        yield ValidationError("has too many entries")


def _items(
    validator: Any, items: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if "prefixItems" in schema or isinstance(items, bool):
        yield from _STANDARD["items"](validator, items, instance, schema)
        return
    if not validator.is_type(instance, "array"):
        return
    for index in range(_checked(len(instance), schema, "maxItems")):
        yield from validator.descend(instance=instance[index], schema=items, path=index)


def _keys(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    return itertools.islice(instance, _checked(len(instance), schema, "maxProperties"))


def _property_names(
    validator: Any, names: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for key in _keys(instance, schema):
        yield from validator.descend(instance=key, schema=names)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if "patternProperties" in schema:
        yield from _STANDARD["additionalProperties"](validator, additional, instance, schema)
        return
    if not validator.is_type(instance, "object") or additional is True:
        return
    known = schema.get("properties", {})
    # One error per unknown key, lazily, at the key's own path (jsonschema makes one
    # error naming every unknown key, sorted: a million keys, one message).
    for key in _keys(instance, schema):
        if key in known:
            continue
        if additional is False:
            yield ValidationError("is not a known field", path=[key])
        else:
            yield from validator.descend(instance[key], additional, path=key)


def _one_of(
    validator: Any, branches: list[Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # As jsonschema's, but keeping at most MAX_COUNTED errors of each branch (and without
    # `repr` of the instance and of every branch in the messages).
    context: list[ValidationError] = []
    valid = [
        index
        for index, branch in enumerate(branches)
        if not _first_errors(validator.descend(instance, branch, schema_path=index), context)
    ]
    if not valid:
        yield ValidationError("is not valid under any of the accepted forms", context=context)
    elif len(valid) > 1:
        yield ValidationError("is valid under more than one of the accepted forms")


def _first_errors(errors: Iterator[ValidationError], into: list[ValidationError]) -> bool:
    """Add at most MAX_COUNTED of `errors` to `into`; whether there was any."""
    before = len(into)
    into.extend(itertools.islice(errors, MAX_COUNTED))
    return len(into) > before


_BOUNDED: dict[str, Keyword] = {
    "pattern": _pattern,
    "type": _type,
    "maxItems": _max_items,
    "maxProperties": _max_properties,
    "items": _items,
    "propertyNames": _property_names,
    "additionalProperties": _additional_properties,
    "oneOf": _one_of,
}
_EstateValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, _BOUNDED
)

#: Checked before anything else at the same place, so "has more than N items" is found
#: before the cap on problems is reached by the items themselves.
_SIZE_FIRST = ("type", "maxItems", "maxProperties")


def _size_first(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_size_first(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    first = {k: schema[k] for k in _SIZE_FIRST if k in schema}
    rest = {k: v for k, v in schema.items() if k not in first}
    return {k: _size_first(v) for k, v in {**first, **rest}.items()}


def _validator() -> Any:
    return _validator_for(profile_providers())


@functools.cache
def _validator_for(providers: tuple[str, ...]) -> Any:
    return _EstateValidator(_size_first(_schema(providers)))


# -- from errors to problems --


def _too_many_items(limit: int) -> str:
    return f"has more than {limit} items"


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors to report for `error`: itself, or for a `oneOf`, those of the form the
    value has (say, an object), so a missing or unknown field inside it is named, not
    just the whole item."""
    if error.validator == "oneOf":
        inner = [e for e in error.context or () if e.validator != "type"]
        if inner:
            for e in inner:
                yield from _leaves(e)
            return
    yield error


def _skipped_some(error: ValidationError) -> bool:
    """Whether, past the limit this error reports, some contents were not checked."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "maxItems":
        return "items" in schema
    if error.validator == "maxProperties":
        return "propertyNames" in schema or isinstance(schema.get("additionalProperties"), dict)
    return False


def _schema_problems(error: ValidationError) -> list[Problem]:
    where = list(error.absolute_path)
    v = error.validator
    arg: Any = error.validator_value
    instance: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if v == "required":
        # One problem per missing field: several missing fields are several problems.
        missing = [name for name in arg if name not in instance] or [arg[0]]
        return [Problem(field_path([*where, name]), "is required") for name in missing]
    if v == "additionalProperties":  # the path already names the key
        return [Problem(field_path(where), "is not a known field")]
    if "propertyNames" in error.schema_path and isinstance(instance, str):
        return [Problem(field_path([*where, instance]), "is not an allowed key")]
    messages: dict[str, Callable[[], str]] = {
        "type": lambda: f"must be of type {arg}",
        "enum": lambda: _enum_message(where, arg, instance),
        "const": lambda: f"must be {arg!r}",
        "pattern": lambda: (
            f"is not a valid id: use {SAFE_ID_RULE}"
            if arg == SAFE_ID_PATTERN
            else schema.get("description") or "contains characters or a form that is not allowed"
        ),
        "maxLength": lambda: f"is longer than {arg} characters",
        "minLength": lambda: "must not be empty" if arg == 1 else f"is shorter than {arg}",
        "maxItems": lambda: _too_many_items(arg),
        "minItems": lambda: f"needs at least {arg} item(s)",
        "maxProperties": lambda: f"has more than {arg} entries",
        "propertyNames": lambda: "has a key that is not allowed",
        "oneOf": lambda: "is not in any of the accepted forms",
    }
    make = messages.get(str(v))
    return [Problem(field_path(where), make() if make else "is not valid")]


def _enum_message(where: list[Any], allowed: list[Any], instance: Any) -> str:
    if where[-1:] == ["provider"] and instance in _NOT_YET_IMPLEMENTED:
        return f"{instance!r} is not implemented yet (supported: {', '.join(allowed)})"
    return "must be one of: " + ", ".join(str(x) for x in allowed)


class _Enough(Exception):
    """MAX_COUNTED problems found: stop looking."""


class _Found:
    """The problems found so far, each once, up to MAX_COUNTED."""

    def __init__(self) -> None:
        #: Each problem, in the order found, with the key that orders schema problems by path.
        self.found: dict[Problem, tuple[Any, ...]] = {}
        self.truncated = False

    def add(self, problem: Problem, key: tuple[Any, ...] = ()) -> None:
        self.found.setdefault(problem, key)
        if len(self.found) >= MAX_COUNTED:
            self.truncated = True
            raise _Enough

    def refusal(self, by_path: bool) -> EstateInvalid:
        problems = list(self.found)
        if by_path:  # stable: problems of one error keep their order
            problems.sort(key=lambda p: self.found[p])
        return EstateInvalid(problems, count=len(problems), truncated=self.truncated)


def _sort_key(parts: Iterable[Any]) -> tuple[Any, ...]:
    # Ints (list indexes) and strs (keys) never meet at one place, but say so anyway.
    return tuple((isinstance(part, int), part) for part in parts)


def _check_schema(document: Any, found: _Found) -> None:
    schema = _validator().schema
    if isinstance(document, dict):
        # An oversized section is named first, whatever else is wrong before it.
        for name, section in schema["properties"].items():
            limit = _limit(section, "maxItems")
            value = document.get(name)
            if limit is not None and isinstance(value, list) and len(value) > limit:
                found.truncated = True
                found.add(Problem(name, _too_many_items(limit)), _sort_key([name]))
    for error in _validator().iter_errors(document):
        for leaf in _leaves(error):
            if _skipped_some(leaf):
                found.truncated = True
            key = _sort_key(leaf.absolute_path)
            for problem in _schema_problems(leaf):
                found.add(problem, key)


def _grants_problem(provider: str, grants: Any) -> str | None:
    """The target kind's own reading of a profile's grants, so `apply` refuses what
    issuance would refuse later."""
    try:
        target_kind(provider).parse_grants(grants)
    except InvalidGrants as exc:
        return str(exc)
    return None


class _Checker:
    """Collects semantic problems so one refusal names every bad field (up to a bound)."""

    def __init__(self, found: _Found) -> None:
        self.found = found

    def add(self, path: str, message: str) -> None:
        self.found.add(Problem(path, message))

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
    """Validate an estate document (as parsed from YAML/JSON).

    Raise `EstateInvalid` with the problems, schema ones first: only a document that
    passes the schema is checked for unknown references, bad durations and the like.
    Either pass stops at `MAX_COUNTED` problems (`EstateInvalid.truncated`).
    """
    found = _Found()
    with contextlib.suppress(_Enough):
        _check_schema(document, found)
    if found.found:
        raise found.refusal(by_path=True)
    doc: dict[str, Any] = document
    check = _Checker(found)
    try:
        kind_overrides, policies = _check_semantics(doc, check)
        environments = _check_environments(doc, check)
    except _Enough:
        raise found.refusal(by_path=False) from None
    if found.found:
        raise found.refusal(by_path=False)
    return Estate(
        owners=tuple(Owner.from_spec(o) for o in doc.get("owners", [])),
        vendors=tuple(Vendor.from_spec(v) for v in doc.get("vendors", [])),
        issuers=tuple(Issuer.from_spec(i) for i in doc.get("issuers", [])),
        profiles=tuple(Profile.from_spec(p) for p in doc.get("profiles", [])),
        identities=tuple(Identity.from_spec(i) for i in doc.get("identities", [])),
        environments=environments,
        kind_overrides=kind_overrides,
        policies=tuple(policies),
    )


def _check_environments(doc: dict[str, Any], check: _Checker) -> tuple[str, ...]:
    """Every environment named is declared (`environments:`, else DEFAULT_ENVIRONMENTS), so a
    typo such as `prdo` is refused, not taken for an environment of its own. Returns them."""
    declared: tuple[str, ...] = tuple(doc.get("environments", DEFAULT_ENVIRONMENTS))
    for i, name in enumerate(declared):
        if name in declared[:i]:
            check.add(f"environments[{i}]", f"{name!r} is declared twice")
    listed = ", ".join(declared)

    def known(path: str, name: str) -> None:
        if name not in declared:
            check.add(path, f"{name!r} is not a declared environment ({listed})")

    for kind_name, overrides in doc.get("kinds", {}).items():
        for j, name in enumerate(overrides.get("allowed_environments", [])):
            known(f"kinds.{kind_name}.allowed_environments[{j}]", name)
    for i, identity in enumerate(doc.get("identities", [])):
        known(f"identities[{i}].environment", identity["environment"])
    return declared


def _check_semantics(
    doc: dict[str, Any], check: _Checker
) -> tuple[dict[Kind, dict[str, Any]], list[Policy]]:
    """What the schema cannot say; returns the kind overrides and the inlined policies."""
    for section in ("owners", "vendors", "issuers", "profiles", "identities"):
        check.duplicates(section, doc.get(section, []))
    for i, vendor in enumerate(doc.get("vendors", [])):
        check.time(f"vendors[{i}].contract_ends", vendor["contract_ends"])
    for i, issuer in enumerate(doc.get("issuers", [])):
        if "jwks" in issuer and "jwks_uri" in issuer:
            check.add(f"issuers[{i}]", "give jwks_uri or an inline jwks, not both")
    for i, profile in enumerate(doc.get("profiles", [])):
        _check_profile(f"profiles[{i}]", profile, check)
    kind_overrides = _kind_overrides(doc.get("kinds", {}), check)
    known = _Known.of(doc)
    for i, identity in enumerate(doc.get("identities", [])):
        _check_identity(f"identities[{i}]", identity, known, kind_overrides, check)
    return kind_overrides, _inline_policies(doc.get("policies", []), check)


def _check_profile(where: str, profile: dict[str, Any], check: _Checker) -> None:
    check.duration(f"{where}.max_ttl", profile["max_ttl"])
    provider = profile["provider"]
    if provider in _AUDIENCE_PROVIDERS and "audience" not in profile:
        check.add(f"{where}.audience", f"is required for provider {provider}")
    if provider not in kind_names():
        return
    if "target" not in profile:
        check.add(f"{where}.target", f"is required for provider {provider}")
    if "grants" in profile:
        grants_problem = _grants_problem(provider, profile["grants"])
        if grants_problem is not None:
            field, _, why = grants_problem.partition(": ")
            check.add(f"{where}.{field}", why)


def _kind_overrides(kinds: dict[str, Any], check: _Checker) -> dict[Kind, dict[str, Any]]:
    kind_overrides: dict[Kind, dict[str, Any]] = {}
    for kind_name, overrides in kinds.items():
        for field in ("max_ttl", "rotate_every", "review_every"):
            if field in overrides:
                check.duration(f"kinds.{kind_name}.{field}", overrides[field])
        kind_overrides[Kind(kind_name)] = dict(overrides)
    return kind_overrides


@dataclass(frozen=True, slots=True)
class _Known:
    """The ids an identity may refer to, and the scopes of each profile."""

    owners: frozenset[str]
    vendors: frozenset[str]
    issuers: frozenset[str]
    profile_scopes: dict[str, set[str]]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> _Known:
        def ids(section: str) -> frozenset[str]:
            return frozenset(item["id"] for item in doc.get(section, []))

        return cls(
            owners=ids("owners"),
            vendors=ids("vendors"),
            issuers=ids("issuers"),
            profile_scopes={p["id"]: set(p.get("scopes", [])) for p in doc.get("profiles", [])},
        )


def _check_identity(
    where: str,
    identity: dict[str, Any],
    known: _Known,
    kind_overrides: dict[Kind, dict[str, Any]],
    check: _Checker,
) -> None:
    kind = Kind(identity["kind"])
    try:
        control = KIND_CONTROL_DEFAULTS[kind].with_overrides(kind_overrides.get(kind, {}))
    except InvalidValue:
        control = KIND_CONTROL_DEFAULTS[kind]  # the bad override is reported under kinds
    if identity["owner"] not in known.owners:
        check.add(f"{where}.owner", f"unknown owner {identity['owner']!r}")
    if "vendor" in identity and identity["vendor"] not in known.vendors:
        check.add(f"{where}.vendor", f"unknown vendor {identity['vendor']!r}")
    if "approval" in identity:
        check.time(f"{where}.approval.expires", identity["approval"]["expires"])
    if "expires" in identity:
        check.time(f"{where}.expires", identity["expires"])
    attest = identity.get("attest")
    if attest is not None and attest["issuer"] not in known.issuers:
        check.add(f"{where}.attest.issuer", f"unknown issuer {attest['issuer']!r}")
    if attest is None and control.attestation_required:
        check.add(f"{where}.attest", f"is required for kind {kind.value}")
    allowed = control.allowed_environments
    if allowed is not None and identity["environment"] not in allowed:
        check.add(
            f"{where}.environment",
            f"kind {kind.value} allows only: {', '.join(allowed)}",
        )
    _check_entitlements(where, identity.get("entitlements", []), known.profile_scopes, check)


def _check_entitlements(
    where: str,
    entitlements: list[Any],
    profile_scopes: dict[str, set[str]],
    check: _Checker,
) -> None:
    seen_profiles: set[str] = set()
    for j, entitlement in enumerate(entitlements):
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
                f"can only narrow the profile's scopes; not in {profile_id}: " + ", ".join(extra),
            )


def _inline_policies(entries: list[Any], check: _Checker) -> list[Policy]:
    policies: list[Policy] = []
    positions: list[int] = []  # index in the file's `policies` of each inlined policy
    for i, entry in enumerate(entries):
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
    return policies
