"""The `x509-svid` and `jwt-svid` providers: SVIDs minted for a lease by the trust
domain's CA.

Like every provider, these run only once the lease row exists (invariant 1) and are bounded
by it: an SVID never outlives its lease (nor its CA). Revocation touches no outside system:
the lease's end is what the Workload API and the CRL act on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether._internal.timeutil import format_time
from tether.model import Identity, Lease, Profile
from tether.providers import JWT_TOKEN_TYPE, IssuedCredential
from tether.spiffe._ca import SERIAL_BITS, TrustDomainCA
from tether.spiffe._ids import SpiffeId
from tether.spiffe.errors import SpiffeError

#: Not a registered RFC 8693 token type (none exists for X509-SVIDs): Tether's own URN, in
#: the same namespace so clients see one kind of value. The secret is the PKCS#8 key; the
#: certificate and bundle come with it in `extra`.
X509_SVID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:x509-svid"  # noqa: S105 - a URI


def svid_serial(lease_id: str) -> int:
    """The X509-SVID serial of a lease: a CRL of revoked SVIDs is built from revoked lease
    ids alone. 127 bits of SHA-256 over the (random) lease id: unpredictable before the
    lease exists, as serials should be (CA/B BR 7.1)."""
    digest = hashlib.sha256(b"tether x509-svid serial\x00" + lease_id.encode()).digest()
    return (int.from_bytes(digest[:16], "big") >> (128 - SERIAL_BITS)) or 1


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class X509SvidProvider:
    """X509-SVIDs: a fresh P-256 key per lease and a certificate for it."""

    name = "x509-svid"
    external = False

    def __init__(self, ca: TrustDomainCA, spiffe_id_of: Callable[[Identity], SpiffeId]) -> None:
        self._ca = ca
        self._spiffe_id_of = spiffe_id_of

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        spiffe_id = self._spiffe_id_of(identity)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._ca.sign_x509_svid(
            spiffe_id, key.public_key(), lease.expires_at, svid_serial(lease.id)
        )
        bundle = self._ca.bundle()
        secret = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return IssuedCredential(
            secret=secret,
            token_type=X509_SVID_TOKEN_TYPE,
            extra={
                "spiffe_id": str(spiffe_id),
                "certificate": _pem(cert),
                "bundle": "".join(_pem(c) for c in bundle.x509_authorities),
                "serial": format(cert.serial_number, "x"),
                # The certificate's own end: before the lease's if the CA ends sooner.
                "expires_at": format_time(cert.not_valid_after_utc),
            },
        )

    def revoke(self, lease: Lease) -> None:
        return None  # the lease's end is the revocation: the CRL and the Workload API see it


class JwtSvidProvider:
    """JWT-SVIDs for one audience: the lease's, else the profile's (one is required)."""

    name = "jwt-svid"
    external = False

    def __init__(self, ca: TrustDomainCA, spiffe_id_of: Callable[[Identity], SpiffeId]) -> None:
        self._ca = ca
        self._spiffe_id_of = spiffe_id_of

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        audience = lease.audience or (profile.audience if profile is not None else None)
        if not audience:
            raise SpiffeError("a jwt-svid profile needs an audience (JWT-SVID.md §3.2)")
        spiffe_id = self._spiffe_id_of(identity)
        token = self._ca.sign_jwt_svid(spiffe_id, [audience], lease.expires_at, jti=lease.id)
        return IssuedCredential(
            secret=token,
            token_type=JWT_TOKEN_TYPE,
            extra={
                "spiffe_id": str(spiffe_id),
                "audience": [audience],
                # The token's own `exp`: before the lease's end if the CA ends sooner.
                "expires_at": format_time(
                    dt.datetime.fromtimestamp(
                        jwt.decode(token, options={"verify_signature": False})["exp"], dt.UTC
                    )
                ),
            },
        )

    def revoke(self, lease: Lease) -> None:
        # A JWT-SVID is a bearer token that lives until its `exp`; its `jti` is the lease
        # id, so a validator that asks Tether can refuse one whose lease has ended.
        return None
