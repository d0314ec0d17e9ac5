"""Credential providers behind one protocol: issue, revoke (and, for real systems, rotate,
reconcile and health in later releases).

A provider never runs before the lease row exists (invariant 1): it receives the lease.
"""

from tether.providers._base import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    OBJECT_PREFIX,
    ExternalProvider,
    IssuedCredential,
    Provider,
    ProviderError,
    Target,
)
from tether.providers._jwt import JwtProvider, SigningKeys
from tether.providers._opaque import OpaqueTokenProvider
from tether.providers._postgres import PostgresProvider
from tether.providers._redis import RedisProvider
from tether.providers._registry import InvalidTarget, TargetRegistry

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "OBJECT_PREFIX",
    "ExternalProvider",
    "InvalidTarget",
    "IssuedCredential",
    "JwtProvider",
    "OpaqueTokenProvider",
    "PostgresProvider",
    "Provider",
    "ProviderError",
    "RedisProvider",
    "SigningKeys",
    "Target",
    "TargetRegistry",
]
