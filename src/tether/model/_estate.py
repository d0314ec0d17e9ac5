from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tether._internal.timeutil import format_duration, format_time, parse_duration, parse_time

Spec = dict[str, Any]


class Kind(enum.StrEnum):
    SERVICE_ACCOUNT = "service_account"
    API_KEY = "api_key"
    WORKLOAD = "workload"
    CERTIFICATE = "certificate"
    TOKEN = "token"  # noqa: S105 - a kind of identity, not a secret
    AGENT = "agent"
    ENCRYPTION_KEY = "encryption_key"
    LEGACY_STATIC = "legacy_static"


#: The environments an estate may name when it declares none (`environments:` in the file):
#: a typo such as `prdo` is refused rather than taken for an environment of its own.
DEFAULT_ENVIRONMENTS: tuple[str, ...] = ("dev", "test", "staging", "prod")


class IdentityStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"


class Criticality(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


def _opt_time(value: dt.datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _opt_duration(value: dt.timedelta | None) -> str | None:
    return None if value is None else format_duration(value)


def _drop_none(spec: Spec) -> Spec:
    return {k: v for k, v in spec.items() if v is not None}


@dataclass(frozen=True, slots=True)
class ControlProfile:
    """The lifecycle controls a kind imposes on every identity of that kind."""

    kind: Kind
    max_ttl: dt.timedelta
    rotate_every: dt.timedelta | None
    attestation_required: bool
    review_every: dt.timedelta
    #: None means any environment.
    allowed_environments: tuple[str, ...] | None = None
    telemetry: bool = True

    def with_overrides(self, overrides: Mapping[str, Any]) -> ControlProfile:
        changes: dict[str, Any] = {}
        for name in ("max_ttl", "rotate_every", "review_every"):
            if name in overrides:
                changes[name] = parse_duration(overrides[name])
        if "attestation_required" in overrides:
            changes["attestation_required"] = bool(overrides["attestation_required"])
        if "allowed_environments" in overrides:
            changes["allowed_environments"] = tuple(overrides["allowed_environments"])
        if "telemetry" in overrides:
            changes["telemetry"] = bool(overrides["telemetry"])
        return replace(self, **changes)

    def to_spec(self) -> Spec:
        return _drop_none(
            {
                "kind": self.kind.value,
                "max_ttl": format_duration(self.max_ttl),
                "rotate_every": _opt_duration(self.rotate_every),
                "attestation_required": self.attestation_required,
                "review_every": format_duration(self.review_every),
                "allowed_environments": (
                    None if self.allowed_environments is None else list(self.allowed_environments)
                ),
                "telemetry": self.telemetry,
            }
        )


def _cp(kind: Kind, max_ttl: str, rotate: str | None, attest: bool, review: str) -> ControlProfile:
    return ControlProfile(
        kind=kind,
        max_ttl=parse_duration(max_ttl),
        rotate_every=None if rotate is None else parse_duration(rotate),
        attestation_required=attest,
        review_every=parse_duration(review),
    )


#: Built-in control profiles. Short-lived kinds (workloads, agents, tokens) are never
#: rotated: they are re-issued. Long-lived kinds carry a rotation interval and a tighter
#: review cadence, because their blast radius when leaked is larger.
KIND_CONTROL_DEFAULTS: Mapping[Kind, ControlProfile] = {
    Kind.SERVICE_ACCOUNT: _cp(Kind.SERVICE_ACCOUNT, "1h", None, False, "90d"),
    Kind.API_KEY: _cp(Kind.API_KEY, "90d", "30d", False, "90d"),
    Kind.WORKLOAD: _cp(Kind.WORKLOAD, "1h", None, True, "180d"),
    Kind.CERTIFICATE: _cp(Kind.CERTIFICATE, "90d", "60d", False, "180d"),
    Kind.TOKEN: _cp(Kind.TOKEN, "1h", None, False, "90d"),
    Kind.AGENT: _cp(Kind.AGENT, "15m", None, True, "30d"),
    Kind.ENCRYPTION_KEY: _cp(Kind.ENCRYPTION_KEY, "365d", "90d", False, "365d"),
    Kind.LEGACY_STATIC: _cp(Kind.LEGACY_STATIC, "365d", "90d", False, "30d"),
}


class OwnerStatus(enum.StrEnum):
    ACTIVE = "active"
    DEPARTED = "departed"


@dataclass(frozen=True, slots=True)
class Owner:
    id: str
    name: str
    contact: str
    status: OwnerStatus = OwnerStatus.ACTIVE
    #: When a departed owner left (governance counts the orphan's grace from it).
    left: dt.datetime | None = None

    @property
    def departed(self) -> bool:
        return self.status is OwnerStatus.DEPARTED

    def to_spec(self) -> Spec:
        spec: Spec = {"id": self.id, "name": self.name, "contact": self.contact}
        # Written only when set, so the stored spec of an estate that never names a
        # lifecycle is unchanged (no plan on upgrade).
        if self.status is not OwnerStatus.ACTIVE:
            spec["status"] = self.status.value
        if self.left is not None:
            spec["left"] = format_time(self.left)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Owner:
        left = spec.get("left")
        return cls(
            id=spec["id"],
            name=spec.get("name", spec["id"]),
            contact=spec["contact"],
            status=OwnerStatus(spec.get("status", "active")),
            left=None if left is None else parse_time(left),
        )


@dataclass(frozen=True, slots=True)
class Person:
    """A person agents may act for, proved by a token of a trusted issuer whose `sub` is
    `subject`. A departed person's agent runs end; `may_act` names the identities that
    may act for them (none: nobody may)."""

    id: str
    issuer: str
    subject: str
    name: str | None = None
    status: OwnerStatus = OwnerStatus.ACTIVE
    may_act: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.status is OwnerStatus.ACTIVE

    def to_spec(self) -> Spec:
        return _drop_none(
            {
                "id": self.id,
                "issuer": self.issuer,
                "subject": self.subject,
                "name": self.name,
                "status": None if self.active else self.status.value,
                "may_act": list(self.may_act) or None,
            }
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Person:
        return cls(
            id=spec["id"],
            issuer=spec["issuer"],
            subject=spec["subject"],
            name=spec.get("name"),
            status=OwnerStatus(spec.get("status", "active")),
            may_act=tuple(spec.get("may_act", ())),
        )


@dataclass(frozen=True, slots=True)
class IntentSchema:
    """What an agent may declare as a run's intent: the tools (profiles), resources
    (audiences or targets) and data classes it may ever mean to use."""

    tools: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    data_classes: tuple[str, ...] = ()

    def to_spec(self) -> Spec:
        return {
            "tools": list(self.tools),
            "resources": list(self.resources),
            "data_classes": list(self.data_classes),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> IntentSchema:
        return cls(
            tools=tuple(spec.get("tools", ())),
            resources=tuple(spec.get("resources", ())),
            data_classes=tuple(spec.get("data_classes", ())),
        )


#: How deep a delegation chain may grow when the identity does not say.
DEFAULT_DELEGATION_DEPTH = 3


@dataclass(frozen=True, slots=True)
class Vendor:
    id: str
    name: str
    contract_ends: dt.datetime

    def to_spec(self) -> Spec:
        return {"id": self.id, "name": self.name, "contract_ends": format_time(self.contract_ends)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Vendor:
        return cls(
            id=spec["id"],
            name=spec.get("name", spec["id"]),
            contract_ends=parse_time(spec["contract_ends"]),
        )


#: The kind of issuer whose evidence is a client certificate (mTLS).
X509_ISSUER = "x509"


@dataclass(frozen=True, slots=True)
class Issuer:
    """A trusted issuer of attestation evidence: OIDC/JWT tokens (`kind: oidc`, the
    default) or X.509 client certificates presented over mTLS (`kind: x509`)."""

    id: str
    preset: str
    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str | None = None
    jwks: Mapping[str, Any] | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    single_use: bool = False
    kind: str = "oidc"
    #: x509: the trusted roots, PEM. Without it, `trust_domain` says whose they are.
    ca: str | None = None
    #: x509: certificates must be X509-SVIDs of this trust domain. With neither `ca` nor
    #: `spiffe_bundle`, it is the estate's own: Tether's CA is the root.
    trust_domain: str | None = None
    #: x509: a federated trust domain's SPIFFE bundle (its `x509-svid` keys are the roots).
    spiffe_bundle: Mapping[str, Any] | None = None

    @property
    def is_x509(self) -> bool:
        return self.kind == X509_ISSUER

    def to_spec(self) -> Spec:
        if self.is_x509:
            return _drop_none(
                {
                    "id": self.id,
                    "kind": self.kind,
                    "ca": self.ca,
                    "trust_domain": self.trust_domain,
                    "spiffe_bundle": None
                    if self.spiffe_bundle is None
                    else dict(self.spiffe_bundle),
                }
            )
        return _drop_none(
            {
                "id": self.id,
                "preset": self.preset,
                "issuer": self.issuer,
                "audiences": list(self.audiences),
                "jwks_uri": self.jwks_uri,
                "jwks": None if self.jwks is None else dict(self.jwks),
                "algorithms": list(self.algorithms),
                "single_use": self.single_use,
            }
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Issuer:
        if spec.get("kind") == X509_ISSUER:
            return cls(
                id=spec["id"],
                preset=X509_ISSUER,
                # What evidence from it names as its issuer (audit, selectors).
                issuer=f"x509:{spec['id']}",
                audiences=(),
                algorithms=(),
                kind=X509_ISSUER,
                ca=spec.get("ca"),
                trust_domain=spec.get("trust_domain"),
                spiffe_bundle=spec.get("spiffe_bundle"),
            )
        preset = spec.get("preset", "oidc")
        return cls(
            id=spec["id"],
            preset=preset,
            issuer=spec["issuer"],
            audiences=tuple(spec["audiences"]),
            jwks_uri=spec.get("jwks_uri"),
            jwks=spec.get("jwks"),
            algorithms=tuple(spec.get("algorithms", ("RS256", "ES256"))),
            # GitHub Actions tokens are bearer evidence for one job: replay is refused.
            single_use=bool(spec.get("single_use", preset == "github-actions")),
        )


@dataclass(frozen=True, slots=True)
class Profile:
    """Something Tether can issue, with the grants it carries and its longest life."""

    id: str
    provider: str
    max_ttl: dt.timedelta
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    target: str | None = None
    grants: Mapping[str, Any] | None = None
    #: The environment what it reaches belongs to (governance: environment crossing).
    environment: str | None = None

    def to_spec(self) -> Spec:
        return _drop_none(
            {
                "id": self.id,
                "provider": self.provider,
                "max_ttl": format_duration(self.max_ttl),
                "scopes": list(self.scopes),
                "audience": self.audience,
                "target": self.target,
                "grants": None if self.grants is None else dict(self.grants),
                "environment": self.environment,
            }
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Profile:
        return cls(
            id=spec["id"],
            provider=spec["provider"],
            max_ttl=parse_duration(spec["max_ttl"]),
            scopes=tuple(spec.get("scopes", ())),
            audience=spec.get("audience"),
            target=spec.get("target"),
            grants=spec.get("grants"),
            environment=spec.get("environment"),
        )


@dataclass(frozen=True, slots=True)
class Approval:
    by: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Entitlement:
    """identity → profile, optionally narrowed to fewer scopes."""

    profile_id: str
    scopes: tuple[str, ...] | None = None
    conditions: Mapping[str, Any] | None = None

    def to_spec(self) -> Spec:
        return _drop_none(
            {
                "profile": self.profile_id,
                "scopes": None if self.scopes is None else list(self.scopes),
                "conditions": None if self.conditions is None else dict(self.conditions),
            }
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Entitlement:
        scopes = spec.get("scopes")
        return cls(
            profile_id=spec["profile"],
            scopes=None if scopes is None else tuple(scopes),
            conditions=spec.get("conditions"),
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """A non-human identity (NHI) and everything that justifies its access."""

    id: str
    kind: Kind
    owner_id: str
    purpose: str
    justification: str
    environment: str
    system: str | None = None
    region: str | None = None
    vendor_id: str | None = None
    approval: Approval | None = None
    criticality: Criticality = Criticality.MEDIUM
    #: The identity's own expiry condition: past it, nothing is issued to it.
    expires_at: dt.datetime | None = None
    status: IdentityStatus = IdentityStatus.ACTIVE
    labels: Mapping[str, str] = field(default_factory=dict)
    attest: Mapping[str, Any] | None = None
    entitlements: tuple[Entitlement, ...] = ()
    #: Its SPIFFE ID as declared; None: the default from the trust domain (tether.spiffe).
    spiffe_id: str | None = None
    #: An encryption_key identity's data classification (public | internal |
    #: confidential | restricted): what its key's crypto policy is chosen by.
    data_classification: str | None = None
    #: An agent's intent schema: what its runs may declare. None: it declares none.
    intent_schema: IntentSchema | None = None
    #: The longest delegation chain (RFC 8693 actors) a credential of it may carry.
    max_delegation_depth: int | None = None
    #: The identities that may act for it (RFC 8693 actor_token; `may_act`).
    may_act: tuple[str, ...] = ()

    @property
    def delegation_depth(self) -> int:
        if self.max_delegation_depth is None:
            return DEFAULT_DELEGATION_DEPTH
        return self.max_delegation_depth

    @property
    def unix_rule(self) -> Mapping[str, Any] | None:
        """Its registration rule by the local kernel's account of the caller, if that is
        how it attests (`attest: {unix: {uid, gid?, path?, sha256?}}`)."""
        rule = self.attest.get("unix") if self.attest is not None else None
        return rule if isinstance(rule, Mapping) else None

    @property
    def attest_issuer(self) -> str | None:
        """The trusted issuer its registration rule names, if it attests by a token."""
        issuer = self.attest.get("issuer") if self.attest is not None else None
        return issuer if isinstance(issuer, str) else None

    def to_spec(self) -> Spec:
        return _drop_none(
            {
                "id": self.id,
                "kind": self.kind.value,
                "owner": self.owner_id,
                "purpose": self.purpose,
                "justification": self.justification,
                "environment": self.environment,
                "system": self.system,
                "region": self.region,
                "vendor": self.vendor_id,
                "approval": (
                    None
                    if self.approval is None
                    else {"by": self.approval.by, "expires": format_time(self.approval.expires_at)}
                ),
                "criticality": self.criticality.value,
                "expires": _opt_time(self.expires_at),
                "status": self.status.value,
                "labels": dict(self.labels),
                "attest": None if self.attest is None else dict(self.attest),
                "entitlements": [e.to_spec() for e in self.entitlements],
                "spiffe_id": self.spiffe_id,
                "data_classification": self.data_classification,
                "intent_schema": None
                if self.intent_schema is None
                else self.intent_schema.to_spec(),
                "max_delegation_depth": self.max_delegation_depth,
                "may_act": list(self.may_act) or None,
            }
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Identity:
        approval = spec.get("approval")
        expires = spec.get("expires")
        return cls(
            id=spec["id"],
            kind=Kind(spec["kind"]),
            owner_id=spec["owner"],
            purpose=spec["purpose"],
            justification=spec["justification"],
            environment=spec["environment"],
            system=spec.get("system"),
            region=spec.get("region"),
            vendor_id=spec.get("vendor"),
            approval=(
                None
                if approval is None
                else Approval(by=approval["by"], expires_at=parse_time(approval["expires"]))
            ),
            criticality=Criticality(spec.get("criticality", "medium")),
            expires_at=None if expires is None else parse_time(expires),
            status=IdentityStatus(spec.get("status", "active")),
            labels=dict(spec.get("labels", {})),
            attest=spec.get("attest"),
            entitlements=tuple(
                Entitlement.from_spec({"profile": e} if isinstance(e, str) else e)
                for e in spec.get("entitlements", ())
            ),
            spiffe_id=spec.get("spiffe_id"),
            data_classification=spec.get("data_classification"),
            intent_schema=None
            if spec.get("intent_schema") is None
            else IntentSchema.from_spec(spec["intent_schema"]),
            max_delegation_depth=spec.get("max_delegation_depth"),
            may_act=tuple(spec.get("may_act", ())),
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """A Cedar policy file from the estate, kept by its path as the id."""

    id: str
    source: str

    def to_spec(self) -> Spec:
        return {"id": self.id, "source": self.source}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Policy:
        return cls(id=spec["id"], source=spec["source"])
