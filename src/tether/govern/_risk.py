"""The risk score of an identity: what its open findings say, scaled by how much it
matters (criticality) and how far it reaches (blast radius). Documented in
docs/governance.md; pure.

    findings   = sum of severity weights of open, unexcepted findings
                 (low 1, medium 3, high 7, critical 15)
    reach      = profiles entitled + 2 x distinct targets + privileges granted
                 + delegated actors seen
    score      = min(100, round(findings x criticality factor x (1 + log2(1 + reach) / 4)))
                 with criticality factor low 0.5, medium 1, high 1.5, critical 2
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tether.model import Criticality, Identity, Profile, Severity

SEVERITY_WEIGHT: Mapping[Severity, int] = {
    Severity.LOW: 1,
    Severity.MEDIUM: 3,
    Severity.HIGH: 7,
    Severity.CRITICAL: 15,
}
CRITICALITY_FACTOR: Mapping[Criticality, float] = {
    Criticality.LOW: 0.5,
    Criticality.MEDIUM: 1.0,
    Criticality.HIGH: 1.5,
    Criticality.CRITICAL: 2.0,
}


@dataclass(frozen=True, slots=True)
class BlastRadius:
    profiles: int
    targets: int
    privileges: int
    delegated_actors: int

    @property
    def reach(self) -> int:
        return self.profiles + 2 * self.targets + self.privileges + self.delegated_actors

    def to_dict(self) -> dict[str, int]:
        return {
            "profiles": self.profiles,
            "targets": self.targets,
            "privileges": self.privileges,
            "delegated_actors": self.delegated_actors,
            "reach": self.reach,
        }


def blast_radius(
    identity: Identity, profiles: Mapping[str, Profile], actors: Iterable[str] = ()
) -> BlastRadius:
    granted = [profiles[e.profile_id] for e in identity.entitlements if e.profile_id in profiles]
    privileges = 0
    for profile in granted:
        grants = profile.grants or {}
        listed = grants.get("privileges") or grants.get("commands") or ()
        privileges += len(listed) if isinstance(listed, list | tuple) else 1
    return BlastRadius(
        profiles=len(granted),
        targets=len({p.target for p in granted if p.target}),
        privileges=privileges,
        delegated_actors=len(set(actors)),
    )


def risk_score(
    severities: Iterable[Severity], criticality: Criticality, radius: BlastRadius
) -> int:
    findings = sum(SEVERITY_WEIGHT[s] for s in severities)
    if findings == 0:
        return 0
    scaled = findings * CRITICALITY_FACTOR[criticality] * (1 + math.log2(1 + radius.reach) / 4)
    return min(100, round(scaled))
