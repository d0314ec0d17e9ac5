"""Workload identity: a CA per trust domain, SVIDs, and the SPIFFE Workload API.

`TrustDomainCA` keeps the trust domain's signing authorities (sealed by the barrier,
rotated prepare-then-activate, published as a SPIFFE bundle). The `x509-svid` and
`jwt-svid` providers issue SVIDs as leases, like every other credential. The Workload
API (`WorkloadApiServer`, on a Unix socket) attests its callers by the kernel and serves
them what their identity is entitled to (`WorkloadIdentities`).
"""

from tether.spiffe._backend import WorkloadIdentities, WorkloadParts
from tether.spiffe._ca import SPIFFE_CA_CHANGED, Bundle, TrustDomainCA
from tether.spiffe._ids import SpiffeId, default_spiffe_id, parse_spiffe_id, parse_trust_domain
from tether.spiffe._revoked import RevokedSvids
from tether.spiffe._socket import WorkloadSocket
from tether.spiffe._svid import JwtSvidProvider, X509SvidProvider, svid_serial
from tether.spiffe.errors import (
    CaUnavailable,
    InvalidJwtSvid,
    InvalidSpiffeId,
    PermissionDenied,
    SpiffeError,
)

__all__ = [
    "SPIFFE_CA_CHANGED",
    "Bundle",
    "CaUnavailable",
    "InvalidJwtSvid",
    "InvalidSpiffeId",
    "JwtSvidProvider",
    "PermissionDenied",
    "RevokedSvids",
    "SpiffeError",
    "SpiffeId",
    "TrustDomainCA",
    "WorkloadIdentities",
    "WorkloadParts",
    "WorkloadSocket",
    "X509SvidProvider",
    "default_spiffe_id",
    "parse_spiffe_id",
    "parse_trust_domain",
    "svid_serial",
]
