"""The Redis kind: one ACL user per lease (`_provider`); profiles' `grants` are read by
`_grants`.

This module only describes the kind; the implementation (and redis-py) load when a
factory is first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.targets._kind import TargetKind
from tether.targets._target import Target

if TYPE_CHECKING:
    from tether.providers import ExternalProvider


def _provider(target: Target) -> ExternalProvider:
    from tether.targets.redis._provider import RedisProvider

    return RedisProvider(target)


def _parse_grants(grants: Any) -> object:
    from tether.targets.redis._grants import parse_grants

    return parse_grants(grants)


KIND = TargetKind(
    name="redis",
    dsn_schemes=("redis://", "rediss://"),
    provider=_provider,
    parse_grants=_parse_grants,
    renewable=True,
)
