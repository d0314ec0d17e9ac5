"""Registered target systems and the kinds they come in.

A `TargetKind` describes one kind of system Tether issues credentials for (PostgreSQL,
Redis, ...): its name, the DSN schemes it accepts, its provider, how it reads a profile's
grants, whether its leases renew in place, and the static credentials it can serve.
`TARGET_KINDS` lists them; everything else in Tether reads kinds from here, so a new
kind is one package under `tether.targets` and one line in the registry.

A `Target` is one registered system: `TargetRegistry` stores its DSN (which carries the
admin credential) only through the barrier and hands out one provider per target.
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
from tether.targets._target import Target
from tether.targets.errors import InvalidGrants, InvalidTarget, TargetError

__all__ = [
    "TARGET_KINDS",
    "InvalidGrants",
    "InvalidTarget",
    "Target",
    "TargetError",
    "TargetKind",
    "TargetRegistry",
    "kind_names",
    "register",
    "renewable_kinds",
    "static_kinds",
    "target_kind",
]
