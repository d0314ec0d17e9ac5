"""What the Workload API serves, and to whom: the node's side of `WorkloadBackend`.

A caller is attested by the kernel (its uid, gid and binary) against the estate's unix
rules; what it gets is decided, leased, bounded and audited by issuance like any other
credential (an SVID is a lease: written before it leaves the node, revoked with its
identity). An X509-SVID is served until half its life has passed, then replaced; one
whose lease ended is never served again. Streams wake on `version`, which moves when the
bundle changes, a lease ends or the estate changes.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.attest import LocalCaller
from tether.estate import EstateViewHolder
from tether.issuance import AccessDenied, InvalidGrant, IssuanceService
from tether.model import Identity, Lease, LeaseState, Profile
from tether.spiffe._ca import TrustDomainCA
from tether.spiffe._peer import Peer
from tether.spiffe._port import X509SvidView
from tether.spiffe._revoked import RevokedSvids
from tether.spiffe.errors import InvalidJwtSvid, PermissionDenied, SpiffeError
from tether.store import Store

_X509, _JWT = "x509-svid", "jwt-svid"


@dataclass(frozen=True, slots=True)
class _Served:
    view: X509SvidView
    lease_id: str
    issued_at: dt.datetime

    @property
    def spiffe_id(self) -> str:
        return self.view.spiffe_id

    def fresh(self, now: dt.datetime) -> bool:
        """Before half its life: after that a replacement is made (and streamed)."""
        return now < self.issued_at + (self.view.expires_at - self.issued_at) / 2


@dataclass(frozen=True, slots=True)
class _ServedJwt:
    spiffe_id: str
    token: str
    lease_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    def fresh(self, now: dt.datetime) -> bool:
        return now < self.issued_at + (self.expires_at - self.issued_at) / 2


@dataclass(frozen=True, slots=True)
class WorkloadParts:
    issuance: IssuanceService
    view: EstateViewHolder
    ca: TrustDomainCA
    store: Store
    clock: Callable[[], dt.datetime]
    #: The SPIFFE ID an identity has now: an SVID naming another is replaced at once.
    spiffe_id_of: Callable[[Identity], object]
    revoked: RevokedSvids


class WorkloadIdentities:
    """The node's Workload API backend (tether.spiffe._workload.WorkloadBackend)."""

    def __init__(self, parts: WorkloadParts) -> None:
        self._p = parts
        self._changed = threading.Condition()
        self._version = 0
        self._lock = threading.Lock()
        self._served: dict[tuple[str, str], _Served] = {}
        self._served_jwt: dict[tuple[str, str, tuple[str, ...]], _ServedJwt] = {}
        #: One issuance at a time per key: concurrent fetches share the SVID it makes.
        self._issuing: dict[tuple[Any, ...], threading.Lock] = {}

    # -- what moves streams --
    def version(self) -> int:
        with self._changed:
            return self._version

    def wait(self, version: int, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self._version > version, timeout)
            return self._version

    def changed(self, *_args: object) -> None:
        """Something a stream shows may have changed: the bundle, the estate, a lease."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def leases_ended(self, ended: Sequence[Lease]) -> None:
        self.lease_ids_ended(lease.id for lease in ended)

    def lease_ids_ended(self, lease_ids: Iterable[str]) -> None:
        """These leases ended (here or on another node): stop serving their SVIDs."""
        gone = set(lease_ids)
        with self._lock:
            stale = [key for key, served in self._served.items() if served.lease_id in gone]
            for key in stale:
                del self._served[key]
            for jwt_key in [k for k, v in self._served_jwt.items() if v.lease_id in gone]:
                del self._served_jwt[jwt_key]
        if stale:
            self.changed()

    def estate_changed(self, *_args: object) -> None:
        """The estate changed: an SVID whose identity, profile or SPIFFE ID is no longer
        what the estate says is not served again (its replacement is made on demand)."""
        view = self._p.view.current

        def stale(key: tuple[Any, ...], spiffe_id: str) -> bool:
            identity = view.identities.get(key[0])
            if identity is None or key[1] not in view.profiles:
                return True
            try:
                return str(self._p.spiffe_id_of(identity)) != spiffe_id
            except SpiffeError:  # no trust domain any more: nothing of it is served
                return True

        with self._lock:
            for key in [k for k, v in self._served.items() if stale(k, v.spiffe_id)]:
                del self._served[key]
            for jwt_key in [k for k, v in self._served_jwt.items() if stale(k, v.spiffe_id)]:
                del self._served_jwt[jwt_key]
        self.changed()

    def crls(self) -> list[bytes]:
        """The CRLs of the published authorities (DER), for the X509SVIDResponse."""
        revoked = self._p.revoked.serials().items()
        return [crl.public_bytes(serialization.Encoding.DER) for crl in self._p.ca.crls(revoked)]

    def _single_flight(self, key: tuple[Any, ...]) -> threading.Lock:
        with self._lock:
            lock = self._issuing.get(key)
            if lock is None:
                lock = self._issuing[key] = threading.Lock()
            return lock

    # -- the API --
    def x509_svids(self, peer: Peer) -> list[X509SvidView]:
        subject, identity = self._attest(peer)
        profiles = self._profiles(identity, _X509)
        now = self._p.clock()
        # The bundle as it is now, not as it was when the SVID was made: a rotation's
        # new authority reaches streams before anything it signs.
        bundle = self._p.ca.bundle().x509_der()
        out = []
        for profile in profiles:
            key = (identity.id, profile.id)
            with self._single_flight(key):
                with self._lock:
                    served = self._served.get(key)
                if served is None or not served.fresh(now) or not self._live(served.lease_id, now):
                    served = self._issue_x509(subject, profile, now)
                    with self._lock:
                        self._served[key] = served
            out.append(replace(served.view, bundle_der=bundle))
        return out

    def x509_bundles(self, peer: Peer) -> dict[str, bytes]:
        self._attest(peer)
        bundle = self._p.ca.bundle()
        return {bundle.trust_domain: bundle.x509_der()}

    def jwt_svids(
        self, peer: Peer, audience: Sequence[str], spiffe_id: str | None
    ) -> list[tuple[str, str]]:
        if not audience:
            raise InvalidJwtSvid("audience is required")
        subject, identity = self._attest(peer)
        profiles = self._profiles(identity, _JWT)
        # A profile's audience, when set, is the only one it signs for: a request that
        # names others besides is refused, not narrowed to the first it names.
        allowed = [p for p in profiles if p.audience is None or list(audience) == [p.audience]]
        if not allowed:
            raise PermissionDenied(
                f"{identity.id} is entitled to no jwt-svid profile for audience"
                f" {', '.join(audience)}"
            )
        profile = replace(allowed[0], audience=audience[0])
        served = self._jwt_svid(subject, identity, profile, tuple(audience))
        if spiffe_id and spiffe_id != served.spiffe_id:
            raise PermissionDenied(f"{identity.id} is not {spiffe_id}")
        return [(served.spiffe_id, served.token)]

    def _jwt_svid(
        self, subject: Any, identity: Identity, profile: Profile, audience: tuple[str, ...]
    ) -> _ServedJwt:
        """A JWT-SVID for this audience: the one made before while it is in the first half
        of its life and its lease lives (as SPIRE's agent caches them), else a new one.
        A workload asking in a loop costs a read, not a signature, a lease and an audit
        entry each time."""
        key = (identity.id, profile.id, audience)
        now = self._p.clock()
        with self._single_flight(key):
            with self._lock:
                served = self._served_jwt.get(key)
            if served is not None and served.fresh(now) and self._live(served.lease_id, now):
                return served
            result, credential = self._issue(subject, profile)
            served = _ServedJwt(
                spiffe_id=str(credential.extra.get("spiffe_id", "")),
                token=result.access_token,
                lease_id=result.lease_id,
                issued_at=now,
                expires_at=result.expires_at,
            )
            with self._lock:
                self._served_jwt[key] = served
            return served

    def jwt_bundles(self, peer: Peer) -> dict[str, bytes]:
        self._attest(peer)
        bundle = self._p.ca.bundle()
        return {bundle.trust_domain: bundle.jwks_json()}

    def validate_jwt(self, peer: Peer, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        self._attest(peer)
        spiffe_id, claims = self._p.ca.validate_jwt_svid(token, audience)
        # Signed and unexpired is not enough here: Tether knows whether its lease ended.
        if not self._live(str(claims.get("jti", "")), self._p.clock()):
            raise InvalidJwtSvid("the JWT-SVID was revoked")
        return str(spiffe_id), claims

    # -- the parts --
    def _attest(self, peer: Peer) -> tuple[Any, Identity]:
        caller = LocalCaller(peer.pid, peer.uid, peer.gid, peer.path, peer.sha256)
        try:
            subject = self._p.issuance.local_subject(caller)
        except InvalidGrant as exc:
            raise PermissionDenied(str(exc)) from None
        return subject, subject.identity

    def _profiles(self, identity: Identity, provider: str) -> list[Profile]:
        view = self._p.view.current
        profiles = [
            view.profiles[e.profile_id]
            for e in identity.entitlements
            if e.profile_id in view.profiles and view.profiles[e.profile_id].provider == provider
        ]
        if not profiles:
            raise PermissionDenied(f"{identity.id} is entitled to no {provider} profile")
        return profiles

    def _issue(self, subject: Any, profile: Profile) -> tuple[Any, Any]:
        try:
            return self._p.issuance.issue_local(subject, profile)
        except (InvalidGrant, AccessDenied) as exc:
            raise PermissionDenied(str(exc)) from None

    def _issue_x509(self, subject: Any, profile: Profile, now: dt.datetime) -> _Served:
        result, credential = self._issue(subject, profile)
        certificate = x509.load_pem_x509_certificate(str(credential.extra["certificate"]).encode())
        key = serialization.load_pem_private_key(credential.secret.encode(), password=None)
        bundle = x509.load_pem_x509_certificates(str(credential.extra["bundle"]).encode())
        view = X509SvidView(
            spiffe_id=str(credential.extra["spiffe_id"]),
            cert_chain_der=certificate.public_bytes(serialization.Encoding.DER),
            key_pkcs8_der=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            bundle_der=b"".join(c.public_bytes(serialization.Encoding.DER) for c in bundle),
            # The certificate's own end: earlier than the lease's when the CA ends sooner.
            expires_at=min(result.expires_at, certificate.not_valid_after_utc),
        )
        return _Served(view, result.lease_id, now)

    def _live(self, lease_id: str, now: dt.datetime) -> bool:
        with self._p.store.read() as tx:
            lease = tx.get_lease(lease_id)
        return lease is not None and lease.state is LeaseState.ACTIVE and lease.expires_at > now
