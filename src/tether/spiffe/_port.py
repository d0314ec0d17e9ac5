"""What the Workload API serves, apart from its wire protocol (tether.spiffe._workload):
the node's backend imports only this, so h2 and protobuf load when a socket is served."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tether.spiffe._peer import Peer


@dataclass(frozen=True, slots=True)
class X509SvidView:
    """One X509-SVID as the Workload API serves it (all DER; the key unencrypted)."""

    spiffe_id: str
    #: The leaf first, then any intermediates, concatenated.
    cert_chain_der: bytes
    key_pkcs8_der: bytes
    #: The trust domain's X.509 authorities, concatenated.
    bundle_der: bytes
    #: Timezone-aware.
    expires_at: dt.datetime
    hint: str = ""


class WorkloadBackend(Protocol):
    """What the Workload API serves, and to whom. Called from worker threads."""

    def version(self) -> int:
        """Grows whenever anything a stream shows may have changed."""
        ...

    def wait(self, version: int, timeout: float) -> int:
        """Block until version() > version or timeout; return version()."""
        ...

    def x509_svids(self, peer: Peer) -> list[X509SvidView]:
        """Raise PermissionDenied(reason) when the caller is entitled to none."""
        ...

    def x509_bundles(self, peer: Peer) -> dict[str, bytes]:
        """Trust domain (name or spiffe://name) -> its X.509 authorities, DER."""
        ...

    def crls(self) -> list[bytes]:
        """The trust domain's certificate revocation lists, DER (X509SVIDResponse.crl)."""
        ...

    def jwt_svids(
        self, peer: Peer, audience: Sequence[str], spiffe_id: str | None
    ) -> list[tuple[str, str]]:
        """(spiffe_id, token) for each identity asked for (all when spiffe_id is None)."""
        ...

    def jwt_bundles(self, peer: Peer) -> dict[str, bytes]:
        """Trust domain (name or spiffe://name) -> JWKS JSON of its JWT authorities."""
        ...

    def validate_jwt(self, peer: Peer, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        """(spiffe_id, claims); raise InvalidJwtSvid when the token is refused."""
        ...


__all__ = ["WorkloadBackend", "X509SvidView"]
