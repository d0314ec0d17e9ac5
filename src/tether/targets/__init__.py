"""Registered target systems and the kinds they come in.

A `TargetKind` describes one kind of system Tether issues credentials for (PostgreSQL,
Redis, ...): its name, the DSN schemes it accepts, its provider, how it reads a profile's
grants, whether its leases renew in place, and the static credentials it can serve.
`TARGET_KINDS` lists them; everything else in Tether reads kinds from here, so a new
kind is one package under `tether.targets` and one line in the registry.

A `Target` is one registered system: `TargetRegistry` stores its DSN (which carries the
admin credential) only through the barrier and hands out one provider per target. It
also samples usage evidence from the targets: their live sessions (`TargetSession`) and
which users can still log in.
"""

from tether.targets._kind import TargetKind
from tether.targets._kinds import (
    TARGET_KINDS,
    kind_names,
    register,
    renewable_kinds,
    static_kinds,
    target_kind,
)
from tether.targets._registry import TargetRegistry
from tether.targets._sessions import EvidenceUnsupported, SessionSource, TargetSession
from tether.targets._target import Target
from tether.targets.errors import InvalidGrants, InvalidTarget, TargetError

__all__ = [
    "TARGET_KINDS",
    "EvidenceUnsupported",
    "InvalidGrants",
    "InvalidTarget",
    "SessionSource",
    "Target",
    "TargetError",
    "TargetKind",
    "TargetRegistry",
    "TargetSession",
    "kind_names",
    "register",
    "renewable_kinds",
    "static_kinds",
    "target_kind",
]
