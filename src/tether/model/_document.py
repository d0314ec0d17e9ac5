"""A whole estate document, validated: what `apply` makes true."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.model._estate import (
    DEFAULT_ENVIRONMENTS,
    KIND_CONTROL_DEFAULTS,
    ControlProfile,
    Identity,
    Issuer,
    Kind,
    Owner,
    Person,
    Policy,
    Profile,
    Vendor,
)
from tether.model._governance import GovernanceSettings, Waiver


@dataclass(frozen=True, slots=True)
class Estate:
    """A whole declared estate, validated and resolved."""

    owners: tuple[Owner, ...] = ()
    vendors: tuple[Vendor, ...] = ()
    issuers: tuple[Issuer, ...] = ()
    profiles: tuple[Profile, ...] = ()
    identities: tuple[Identity, ...] = ()
    #: The environments identities may name: the file's `environments`, or the default.
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    #: Per-kind overrides of the built-in control profiles, as written in the file.
    kind_overrides: Mapping[Kind, Mapping[str, Any]] = field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)
    exceptions: tuple[Waiver, ...] = ()
    #: The SPIFFE trust domain of the estate's workloads, if it has SVID profiles.
    trust_domain: str | None = None
    #: Confidentiality keys' settings as written (`crypto_policy`, `escrow_holders`,
    #: `approver_groups`), validated by tether.keys; only the sections given.
    key_settings: Mapping[str, Any] = field(default_factory=dict)
    #: AuthZEN applications as written, policy files inlined, validated by tether.authzen.
    applications: tuple[Mapping[str, Any], ...] = ()
    #: The people agents may act for (`people:`).
    people: tuple[Person, ...] = ()

    def control_profile(self, kind: Kind) -> ControlProfile:
        return KIND_CONTROL_DEFAULTS[kind].with_overrides(self.kind_overrides.get(kind, {}))
