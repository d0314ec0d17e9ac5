"""The registry of target kinds: the one place the kinds Tether knows are listed.

Everything that needs a kind reads it from here: target registration (DSN schemes,
provider factory), estate validation (profile providers, grants), renewal, static
credentials and the transports' choices. A new kind is its own package under
`tether.targets` and one entry in `_BUILT_IN`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from tether.targets import postgres, redis
from tether.targets._kind import TargetKind
from tether.targets.errors import InvalidTarget

_BUILT_IN = (postgres.KIND, redis.KIND)

_kinds: dict[str, TargetKind] = {kind.name: kind for kind in _BUILT_IN}

#: Every known kind by name, read-only; `register` adds to it.
TARGET_KINDS: Mapping[str, TargetKind] = MappingProxyType(_kinds)


def register(kind: TargetKind, *, replace: bool = False) -> None:
    """Add a kind (a plug-in, or a test's wrapper around a built-in one). Call it before
    the node is built: a TargetRegistry reads its kinds when it is made. Replacing a kind
    of the same name must be asked for, so two kinds never fight over a name silently."""
    if kind.name in _kinds and not replace:
        raise InvalidTarget(f"kind: {kind.name!r} is registered already")
    taken = {k.static_kind for k in _kinds.values() if k.name != kind.name}
    if kind.static_kind is not None and kind.static_kind in taken:
        raise InvalidTarget(f"static_kind: {kind.static_kind!r} is served by another kind")
    _kinds[kind.name] = kind


def kind_names() -> tuple[str, ...]:
    """The names of the known kinds, in registration order."""
    return tuple(_kinds)


def target_kind(name: str) -> TargetKind:
    """The kind called `name`; InvalidTarget naming the known ones otherwise."""
    kind = _kinds.get(name)
    if kind is None:
        raise InvalidTarget(f"kind: must be one of {', '.join(sorted(_kinds))}")
    return kind


def renewable_kinds() -> tuple[str, ...]:
    """The kinds whose leases are renewed in place (the target's own expiry moves)."""
    return tuple(name for name, kind in _kinds.items() if kind.renewable)


def static_kinds() -> tuple[str, ...]:
    """The static credential kinds that some target kind serves (e.g. a pair of roles)."""
    return tuple(k.static_kind for k in _kinds.values() if k.static_kind is not None)
