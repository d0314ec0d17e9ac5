"""The PostgreSQL kind: one login role per lease (`_provider`), static credentials served
by two alternating roles (`_static`), both over the same connection and password helpers
(`_session`). Profiles' `grants` are read by `_grants`.

This module only describes the kind; the implementations (and psycopg) load when a
factory is first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.targets._kind import TargetKind
from tether.targets._target import Target

if TYPE_CHECKING:
    from tether.providers import ExternalProvider
    from tether.static import StaticBackend, StaticCredential

NAME = "postgres"
STATIC_KIND = "postgres-static"


def _provider(target: Target) -> ExternalProvider:
    from tether.targets.postgres._provider import PostgresProvider

    return PostgresProvider(target)


def _parse_grants(grants: Any) -> object:
    from tether.targets.postgres._grants import parse_grants

    return parse_grants(grants)


def _static_backend(target: Target, credential: StaticCredential) -> StaticBackend:
    from tether.targets.postgres._static import InvalidStaticBackend, PostgresStaticBackend

    if credential.users is None:
        raise InvalidStaticBackend("users: expected exactly two role names")
    return PostgresStaticBackend(target, credential.users, grant_from=credential.grant_from)


KIND = TargetKind(
    name=NAME,
    dsn_schemes=("postgresql://", "postgres://"),
    provider=_provider,
    parse_grants=_parse_grants,
    renewable=True,
    static_kind=STATIC_KIND,
    static_backend=_static_backend,
)
