"""From a parsed estate document to a validated `Estate`, or the problems with it.

One request, bounded work: validation stops once it has found `MAX_COUNTED` problems and
a refusal lists the first `MAX_REPORTED`. Schema errors are drawn from the validator one
at a time, the size limits of lists and mappings are checked before their contents, and
nothing past a limit is looked at, so a million bad items cost as much as a thousand.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether._internal.timeutil import InvalidValue, parse_duration, parse_time
from tether.estate._schema import Enough, Found
from tether.estate.errors import Problem
from tether.model import (
    DEFAULT_ENVIRONMENTS,
    KIND_CONTROL_DEFAULTS,
    RULES,
    THRESHOLD_NAMES,
    X509_ISSUER,
    Estate,
    GovernanceSettings,
    Identity,
    Issuer,
    Kind,
    Owner,
    Person,
    Policy,
    Profile,
    Vendor,
    Waiver,
)
from tether.policy import KEY_ACTIONS, KEY_PROVIDER, validate_policies
from tether.providers import SVID_PROVIDERS
from tether.targets import InvalidGrants, kind_names, target_kind

#: Providers that mint for an audience.
_AUDIENCE_PROVIDERS = {"jwt"}


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

    def __init__(self, found: Found) -> None:
        self.found = found

    def add(self, path: str, message: str) -> None:
        self.found.add(Problem(path, message))

    def duplicates(self, section: str, items: Sequence[dict[str, Any]]) -> None:
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item["id"] in seen:
                self.add(f"{section}[{index}].id", f"duplicate id {item['id']!r}")
            seen.add(item["id"])

    def duration(self, path: str, value: str, *, zero: bool = False) -> None:
        try:
            parse_duration(value, zero=zero)
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
    from tether.estate._schema_check import check_schema  # jsonschema, on first use

    found = Found()
    with contextlib.suppress(Enough):
        check_schema(document, found)
    if found.found:
        raise found.refusal(by_path=True)
    doc: dict[str, Any] = document
    check = _Checker(found)
    try:
        kind_overrides, policies = _check_semantics(doc, check)
        environments = _check_environments(doc, check)
    except Enough:
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
        governance=GovernanceSettings.from_spec(doc.get("governance", {})),
        exceptions=tuple(Waiver.from_spec(e) for e in doc.get("exceptions", [])),
        trust_domain=doc.get("trust_domain"),
        key_settings={name: doc[name] for name in _KEY_SECTIONS if name in doc},
        applications=tuple(doc.get("applications", [])),
        people=tuple(Person.from_spec(p) for p in doc.get("people", [])),
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
    for i, profile in enumerate(doc.get("profiles", [])):
        if "environment" in profile:
            known(f"profiles[{i}].environment", profile["environment"])
    return declared


def _check_semantics(
    doc: dict[str, Any], check: _Checker
) -> tuple[dict[Kind, dict[str, Any]], list[Policy]]:
    """What the schema cannot say; returns the kind overrides and the inlined policies."""
    for section in ("owners", "vendors", "issuers", "profiles", "identities"):
        check.duplicates(section, doc.get(section, []))
    for i, vendor in enumerate(doc.get("vendors", [])):
        check.time(f"vendors[{i}].contract_ends", vendor["contract_ends"])
    for i, owner in enumerate(doc.get("owners", [])):
        if "left" in owner:
            check.time(f"owners[{i}].left", owner["left"])
            if owner.get("status", "active") != "departed":
                check.add(f"owners[{i}].left", "is only for a departed owner (status: departed)")
        elif owner.get("status") == "departed":
            check.add(f"owners[{i}].left", "is required for a departed owner")
    _check_governance(doc.get("governance", {}), check)
    for i, issuer in enumerate(doc.get("issuers", [])):
        _check_issuer(f"issuers[{i}]", issuer, doc.get("trust_domain"), check)
    for i, profile in enumerate(doc.get("profiles", [])):
        _check_profile(f"profiles[{i}]", profile, check)
    _check_trust_domain(doc, check)
    _check_key_settings(doc, check)
    _check_applications(doc, check)
    kind_overrides = _kind_overrides(doc.get("kinds", {}), check)
    known = _Known.of(doc)
    for i, identity in enumerate(doc.get("identities", [])):
        _check_identity(f"identities[{i}]", identity, known, kind_overrides, check)
    _check_unique_spiffe_ids(doc, check)
    _check_delegation(doc, check)
    _check_exceptions(doc, check)
    return kind_overrides, _inline_policies(doc.get("policies", []), check)


#: The estate's sections for confidentiality keys (tether.keys validates and reads them).
_KEY_SECTIONS = ("crypto_policy", "escrow_holders", "approver_groups")


def _check_key_settings(doc: dict[str, Any], check: _Checker) -> None:
    if not any(name in doc for name in _KEY_SECTIONS):
        return
    from tether.keys import ApproverGroup, CryptoPolicy, EscrowHolder, KeysError

    def report(exc: KeysError) -> None:
        where, _, message = str(exc).partition(": ")
        check.add(where, message or str(exc))

    try:
        CryptoPolicy.from_spec(doc.get("crypto_policy"))
    except KeysError as exc:
        report(exc)
    for section, parse in (
        ("escrow_holders", EscrowHolder.from_spec),
        ("approver_groups", ApproverGroup.from_spec),
    ):
        check.duplicates(section, doc.get(section, []))
        for i, spec in enumerate(doc.get(section, [])):
            try:
                parse(spec, f"{section}[{i}]")
            except KeysError as exc:
                report(exc)


def _check_applications(doc: dict[str, Any], check: _Checker) -> None:
    """AuthZEN applications: entities, and Cedar policies parsed under their namespace."""
    if "applications" not in doc:
        return
    from tether.authzen import application_problems

    for problem in application_problems(doc["applications"]):
        check.add(problem.path, problem.message)


_OIDC_ONLY = ("preset", "issuer", "audiences", "jwks_uri", "jwks", "algorithms", "single_use")
_X509_ONLY = ("ca", "trust_domain", "spiffe_bundle")


def _check_issuer(
    where: str, issuer: dict[str, Any], own_trust_domain: str | None, check: _Checker
) -> None:
    if issuer.get("kind", "oidc") != X509_ISSUER:
        if "jwks" in issuer and "jwks_uri" in issuer:
            check.add(where, "give jwks_uri or an inline jwks, not both")
        for name in _X509_ONLY:
            if name in issuer:
                check.add(f"{where}.{name}", "is for issuers of kind x509")
        return
    for name in _OIDC_ONLY:
        if name in issuer:
            check.add(f"{where}.{name}", "is for OIDC issuers, not kind x509")
    trust_domain = issuer.get("trust_domain")
    if trust_domain is not None:
        from tether.spiffe import InvalidSpiffeId, parse_trust_domain

        try:
            parse_trust_domain(trust_domain)
        except InvalidSpiffeId as exc:
            check.add(f"{where}.trust_domain", str(exc))
            return
    if "ca" in issuer and "spiffe_bundle" in issuer:
        check.add(where, "give ca or spiffe_bundle, not both")
        return
    if "spiffe_bundle" in issuer and trust_domain is None:
        check.add(f"{where}.trust_domain", "is required with a spiffe_bundle: whose bundle is it?")
    if "ca" not in issuer and "spiffe_bundle" not in issuer:
        if trust_domain is None:
            check.add(where, "an x509 issuer needs ca, spiffe_bundle, or a trust_domain")
        elif trust_domain != own_trust_domain:
            check.add(
                f"{where}.spiffe_bundle",
                f"is required for trust domain {trust_domain!r}, which is not this estate's "
                "own (only the own trust domain's roots are Tether's CA)",
            )
        return
    from tether.attest import X509IssuerInvalid, x509_issuer_roots

    try:
        x509_issuer_roots(Issuer.from_spec(issuer))
    except X509IssuerInvalid as exc:
        check.add(f"{where}.{exc.field}", str(exc))


def _check_trust_domain(doc: dict[str, Any], check: _Checker) -> None:
    """SVID profiles need a trust domain to name their workloads in."""
    name = doc.get("trust_domain")
    if name is not None:
        from tether.spiffe import InvalidSpiffeId, parse_trust_domain

        try:
            parse_trust_domain(name)
        except InvalidSpiffeId as exc:
            check.add("trust_domain", str(exc))
        return
    for i, profile in enumerate(doc.get("profiles", [])):
        if profile["provider"] in SVID_PROVIDERS:
            check.add(f"profiles[{i}].provider", f"{profile['provider']} needs a trust_domain")


def _check_profile(where: str, profile: dict[str, Any], check: _Checker) -> None:
    check.duration(f"{where}.max_ttl", profile["max_ttl"])
    provider = profile["provider"]
    if provider == KEY_PROVIDER:
        # Entitles the use of a confidentiality key: `target` names it, `scopes` are the
        # uses (encrypt, decrypt, ...). Nothing is issued for it.
        if "target" not in profile:
            check.add(f"{where}.target", "is required for provider key: the key's name")
        unknown = sorted(set(profile.get("scopes", [])) - set(KEY_ACTIONS))
        if unknown:
            check.add(
                f"{where}.scopes",
                f"{', '.join(unknown)}: not a key use (one of: {', '.join(KEY_ACTIONS)})",
            )
        return
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


def _check_governance(governance: dict[str, Any], check: _Checker) -> None:
    def durations(where: str, section: dict[str, Any]) -> None:
        for name in THRESHOLD_NAMES:
            if name in section:
                check.duration(f"{where}.{name}", section[name])

    durations("governance", governance)
    for kind_name, overrides in governance.get("kinds", {}).items():
        durations(f"governance.kinds.{kind_name}", overrides)
    if "evaluate_every" in governance:
        check.duration("governance.evaluate_every", governance["evaluate_every"])
    orphaned = governance.get("orphaned")
    if isinstance(orphaned, dict) and "grace" in orphaned:
        check.duration("governance.orphaned.grace", orphaned["grace"], zero=True)
    for i, network in enumerate(governance.get("workstation_sources", [])):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            check.add(f"governance.workstation_sources[{i}]", f"{network!r} is not an IP network")
    seen: set[str] = set()
    for i, sink in enumerate(governance.get("sinks", [])):
        where = f"governance.sinks[{i}]"
        if sink["id"] in seen:
            check.add(f"{where}.id", f"duplicate id {sink['id']!r}")
        seen.add(sink["id"])
        needed = {"webhook": "url", "jsonl": "path"}[sink["kind"]]
        if needed not in sink:
            check.add(f"{where}.{needed}", f"is required for a {sink['kind']} sink")


def _check_exceptions(doc: dict[str, Any], check: _Checker) -> None:
    identities = {i["id"] for i in doc.get("identities", [])}
    owners = {o["id"] for o in doc.get("owners", [])}
    check.duplicates("exceptions", doc.get("exceptions", []))
    for i, waiver in enumerate(doc.get("exceptions", [])):
        where = f"exceptions[{i}]"
        check.time(f"{where}.expires", waiver["expires"])
        if waiver["rule"] not in RULES:
            check.add(f"{where}.rule", f"unknown rule {waiver['rule']!r}")
        if waiver["identity"] == "*":
            if waiver.get("scope") not in owners:
                check.add(f"{where}.scope", "a waiver for every identity (*) names an owner here")
        elif waiver["identity"] not in identities:
            check.add(f"{where}.identity", f"unknown identity {waiver['identity']!r}")
        if waiver["approved_by"].strip().lower() == waiver["requested_by"].strip().lower():
            check.add(f"{where}.approved_by", "the approver of an exception is not its requester")


def _kind_overrides(kinds: dict[str, Any], check: _Checker) -> dict[Kind, dict[str, Any]]:
    kind_overrides: dict[Kind, dict[str, Any]] = {}
    for kind_name, overrides in kinds.items():
        for field in ("max_ttl", "rotate_every", "review_every"):
            if field in overrides:
                check.duration(f"kinds.{kind_name}.{field}", overrides[field])
        kind_overrides[Kind(kind_name)] = dict(overrides)
    return kind_overrides


def _check_delegation(doc: dict[str, Any], check: _Checker) -> None:
    """People and `may_act` name what exists; an intent schema's tools are profiles."""
    check.duplicates("people", doc.get("people", []))
    identities = {i["id"] for i in doc.get("identities", [])}
    issuers = {i["id"] for i in doc.get("issuers", [])}
    profiles = {p["id"] for p in doc.get("profiles", [])}

    def actors(where: str, names: list[str]) -> None:
        for j, name in enumerate(names):
            if name not in identities:
                check.add(f"{where}.may_act[{j}]", f"unknown identity {name!r}")

    seen: dict[tuple[str, str], str] = {}
    for i, person in enumerate(doc.get("people", [])):
        where = f"people[{i}]"
        if person["issuer"] not in issuers:
            check.add(f"{where}.issuer", f"unknown issuer {person['issuer']!r}")
        key = (person["issuer"], person["subject"])
        if key in seen:
            check.add(f"{where}.subject", f"is also person {seen[key]}'s subject at this issuer")
        seen[key] = person["id"]
        actors(where, person.get("may_act", []))
    for i, identity in enumerate(doc.get("identities", [])):
        where = f"identities[{i}]"
        actors(where, identity.get("may_act", []))
        schema = identity.get("intent_schema")
        if schema is None:
            continue
        if identity["kind"] != Kind.AGENT.value:
            check.add(f"{where}.intent_schema", "is only for identities of kind agent")
        for j, tool in enumerate(schema.get("tools", [])):
            if tool not in profiles:
                check.add(f"{where}.intent_schema.tools[{j}]", f"unknown profile {tool!r}")


@dataclass(frozen=True, slots=True)
class _Known:
    """The ids an identity may refer to, and the scopes of each profile."""

    owners: frozenset[str]
    vendors: frozenset[str]
    issuers: frozenset[str]
    profile_scopes: dict[str, set[str]]
    trust_domain: str | None = None
    x509_issuers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, doc: dict[str, Any]) -> _Known:
        def ids(section: str) -> frozenset[str]:
            return frozenset(item["id"] for item in doc.get(section, []))

        return cls(
            owners=ids("owners"),
            vendors=ids("vendors"),
            issuers=ids("issuers"),
            profile_scopes={p["id"]: set(p.get("scopes", [])) for p in doc.get("profiles", [])},
            trust_domain=doc.get("trust_domain"),
            x509_issuers=frozenset(
                i["id"] for i in doc.get("issuers", []) if i.get("kind") == X509_ISSUER
            ),
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
    if attest is not None:
        _check_attest(f"{where}.attest", attest, known, check)
    _check_spiffe_id(where, identity, known, check)
    allowed = control.allowed_environments
    if allowed is not None and identity["environment"] not in allowed:
        check.add(
            f"{where}.environment",
            f"kind {kind.value} allows only: {', '.join(allowed)}",
        )
    _check_entitlements(where, identity.get("entitlements", []), known.profile_scopes, check)


def _check_attest(where: str, attest: dict[str, Any], known: _Known, check: _Checker) -> None:
    """One form of rule: a trusted issuer's token ({issuer, claims}) or the local kernel's
    account of the caller ({unix: {...}})."""
    if "unix" in attest:
        for name in ("issuer", "claims"):
            if name in attest:
                check.add(f"{where}.{name}", "a unix rule names no issuer or claims")
        return
    for name in ("issuer", "claims"):
        if name not in attest:
            check.add(f"{where}.{name}", "is required")
    if "issuer" in attest and attest["issuer"] not in known.issuers:
        check.add(f"{where}.issuer", f"unknown issuer {attest['issuer']!r}")
    if attest.get("issuer") in known.x509_issuers and isinstance(attest.get("claims"), dict):
        from tether.attest import X509_SELECTORS

        for name in attest["claims"]:
            if name not in X509_SELECTORS:
                check.add(
                    f"{where}.claims.{name}",
                    f"is not a certificate selector (one of: {', '.join(X509_SELECTORS)})",
                )


def _check_unique_spiffe_ids(doc: dict[str, Any], check: _Checker) -> None:
    """One SPIFFE ID, one identity: a second would be served the first one's SVIDs."""
    trust_domain = doc.get("trust_domain")
    if trust_domain is None:
        return
    seen: dict[str, int] = {}
    for i, identity in enumerate(doc.get("identities", [])):
        effective = identity.get("spiffe_id") or (
            f"spiffe://{trust_domain}/{identity['environment']}/{identity['id']}"
        )
        if effective in seen:
            check.add(
                f"identities[{i}].spiffe_id",
                f"{effective} is identities[{seen[effective]}]'s too",
            )
        seen.setdefault(effective, i)


def _check_spiffe_id(where: str, identity: dict[str, Any], known: _Known, check: _Checker) -> None:
    declared = identity.get("spiffe_id")
    if declared is None:
        return
    # Here, not at the top: tether.spiffe builds on the estate (a cycle otherwise).
    from tether.spiffe import InvalidSpiffeId, parse_spiffe_id

    try:
        spiffe_id = parse_spiffe_id(declared)
    except InvalidSpiffeId as exc:
        check.add(f"{where}.spiffe_id", str(exc))
        return
    if not spiffe_id.path:
        check.add(f"{where}.spiffe_id", "names only the trust domain: a workload's ID has a path")
    elif known.trust_domain is None:
        check.add(f"{where}.spiffe_id", "needs the estate's trust_domain")
    elif spiffe_id.trust_domain != known.trust_domain:
        check.add(
            f"{where}.spiffe_id",
            f"is in trust domain {spiffe_id.trust_domain!r}, not the estate's"
            f" {known.trust_domain!r}",
        )


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
