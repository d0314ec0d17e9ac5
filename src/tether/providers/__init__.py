"""Credential providers behind one protocol: issue, revoke (and, for target systems,
renew, rotate_root, reconcile and health: `ExternalProvider`).

The in-process providers live here (JWTs, opaque tokens); those of target systems
(PostgreSQL, Redis, ...) live with their kind in `tether.targets`.
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
)
from tether.providers._jwt import JwtProvider, SigningKeys
from tether.providers._opaque import OpaqueTokenProvider

#: The providers a profile may name that mint in-process, without a target: JWTs and
#: opaque tokens. Every other profile provider is a target kind (`tether.targets`).
#: Workload identities signed by the trust domain's CA (tether.spiffe).
SVID_PROVIDERS = ("x509-svid", "jwt-svid")
LOCAL_PROVIDERS = ("jwt", "token", *SVID_PROVIDERS)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "LOCAL_PROVIDERS",
    "OBJECT_PREFIX",
    "SVID_PROVIDERS",
    "ExternalProvider",
    "IssuedCredential",
    "JwtProvider",
    "OpaqueTokenProvider",
    "Provider",
    "ProviderError",
    "SigningKeys",
]
