"""The trust domain's CA: X.509 and JWT signing authorities, rotated on SPIRE's schedule
and published as a SPIFFE bundle.

Each authority is an EC P-256 CA certificate for X509-SVIDs plus a separate P-256 key for
JWT-SVIDs (as SPIRE keeps them apart), both living as long as the certificate. An
authority is `prepared` (published, signing nothing), then `active` (signing), then
`retiring` (published, signing nothing, until it expires). The next authority is prepared
at PREPARE_AT of the active one's life and activated at ACTIVATE_AT, so relying parties
have had it in their bundle for a third of a CA life before the first SVID it signs, and
every SVID the old one signed (never outliving it: SVIDs are clamped to their CA) still
verifies until it expires.

Persistence follows `SigningKeys`: the public half (certificates, JWT public keys, states,
the bundle sequence) is metadata; private keys are stored only through the barrier.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether._internal.timeutil import utcnow
from tether.barrier import Barrier, Sealed
from tether.spiffe._ids import SpiffeId, parse_spiffe_id
from tether.spiffe.errors import CaUnavailable, InvalidJwtSvid, InvalidSpiffeId, SpiffeError
from tether.store import Store, Tx

log = logging.getLogger("tether.spiffe")

_META = "spiffe/authorities"
_SEALED_PURPOSE = "spiffe-ca"
#: Published (with {}) in the transaction that changes the authorities: other processes
#: call `ensure()`, which re-reads them.
SPIFFE_CA_CHANGED = "spiffe.ca_changed"

#: SPIRE's schedule, as fractions of the active authority's life (numerator, denominator).
PREPARE_AT = (1, 2)
ACTIVATE_AT = (5, 6)
#: Certificates start this long before they are made: relying parties' clocks differ.
BACKDATE = dt.timedelta(minutes=1)
#: The longest refresh hint published. Shorter CA lives get a tenth of the window between
#: preparation and activation (a third of a life), so the new key is seen many times over.
MAX_REFRESH_HINT = 300
JWT_ALGORITHM = "ES256"
#: X509-SVID serials are positive and fit in 127 bits (X509-SVID.md leaves this to RFC 5280;
#: SPIRE uses 127-bit random serials, as does `svid_serial`).
SERIAL_BITS = 127


class _State(enum.StrEnum):
    PREPARED = "prepared"
    ACTIVE = "active"
    RETIRING = "retiring"


@dataclass(frozen=True, slots=True)
class _Authority:
    #: Names the sealed CA key (`spiffe-ca/<id>`).
    id: str
    state: _State
    certificate: x509.Certificate
    #: Names the JWT key in JWT-SVID headers and the sealed JWT key (`spiffe-ca/<kid>`).
    jwt_kid: str
    jwt_public: ec.EllipticCurvePublicKey
    ca_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False, compare=False)
    jwt_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False, compare=False)

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def at(self, fraction: tuple[int, int]) -> dt.datetime:
        """The instant `fraction` of the way through this authority's life."""
        numerator, denominator = fraction
        return self.not_before + (self.not_after - self.not_before) * numerator // denominator


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The authorities as last read from (or written to) the store, with private keys."""

    #: SHA-256 of the stored metadata: a different digest means another process changed it.
    digest: bytes
    trust_domain: str
    sequence: int
    authorities: tuple[_Authority, ...]

    def active(self) -> _Authority | None:
        return next((a for a in self.authorities if a.state is _State.ACTIVE), None)


@dataclass(frozen=True, slots=True)
class Bundle:
    """What a relying party must trust now to verify this trust domain's SVIDs."""

    trust_domain: str
    #: Every CA certificate a relying party must trust now (prepared, active, retiring).
    x509_authorities: tuple[x509.Certificate, ...]
    #: kid -> key of every JWT-SVID key a relying party must accept now.
    jwt_authorities: Mapping[str, ec.EllipticCurvePublicKey]
    #: Grows on every change.
    sequence: int
    #: Seconds: how often relying parties should fetch the bundle again.
    refresh_hint: int

    def to_jwks(self) -> dict[str, Any]:
        """The SPIFFE bundle (SPIFFE_Trust_Domain_and_Bundle.md §4): a JWK Set whose
        `x509-svid` keys carry their CA certificate in `x5c` (and no `kid`) and whose
        `jwt-svid` keys carry their `kid`."""
        keys: list[dict[str, Any]] = []
        for cert in self.x509_authorities:
            public = cert.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            der = cert.public_bytes(serialization.Encoding.DER)
            # RFC 7517 §4.7: x5c is standard base64 (not base64url) DER.
            keys.append(
                {**_ec_jwk(public), "use": "x509-svid", "x5c": [base64.b64encode(der).decode()]}
            )
        keys += self._jwt_keys()
        return {
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint,
        }

    def x509_der(self) -> bytes:
        """The authorities' DER certificates, concatenated (the Workload API's format)."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.x509_authorities)

    def jwks_json(self) -> bytes:
        """The JWT authorities as a JWK Set (the Workload API's JWT bundle format)."""
        return json.dumps({"keys": self._jwt_keys()}).encode()

    def _jwt_keys(self) -> list[dict[str, Any]]:
        return [
            {**_ec_jwk(public), "kid": kid, "use": "jwt-svid"}
            for kid, public in self.jwt_authorities.items()
        ]


def _b64url_uint(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def _ec_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """RFC 7518 §6.2 parameters of a P-256 public key."""
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url_uint(numbers.x, 32),
        "y": _b64url_uint(numbers.y, 32),
    }


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_private(pem: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    if pem is None:
        return None
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _whole_seconds(value: dt.datetime) -> dt.datetime:
    """X.509 times have whole seconds: what is stored is what the certificate says."""
    return value.replace(microsecond=0)


def _encode(trust_domain: str, sequence: int, authorities: Sequence[_Authority]) -> bytes:
    docs = [
        {
            "id": a.id,
            "state": a.state.value,
            "certificate": a.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "jwt_kid": a.jwt_kid,
            "jwt_public_key": a.jwt_public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
        }
        for a in authorities
    ]
    doc = {"trust_domain": trust_domain, "sequence": sequence, "authorities": docs}
    return json.dumps(doc, sort_keys=True).encode()


def _decode(raw: bytes) -> tuple[str, int, list[_Authority]]:
    doc = json.loads(raw)
    authorities = []
    for item in doc["authorities"]:
        public = serialization.load_pem_public_key(item["jwt_public_key"].encode())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        authorities.append(
            _Authority(
                id=item["id"],
                state=_State(item["state"]),
                certificate=x509.load_pem_x509_certificate(item["certificate"].encode()),
                jwt_kid=item["jwt_kid"],
                jwt_public=public,
            )
        )
    return doc["trust_domain"], int(doc["sequence"]), authorities


def _activation_time(
    active: _Authority, prepared: _Authority, published: dt.timedelta
) -> dt.datetime:
    """When the schedule activates `prepared`: at ACTIVATE_AT of the active one's life, and
    never before it has been published for `published` (one refresh hint), however late it
    was prepared: a relying party polling at the hint has fetched it at least once."""
    return max(active.at(ACTIVATE_AT), prepared.not_before + BACKDATE + published)


def _due(snapshot: _Snapshot, now: dt.datetime, published: dt.timedelta) -> bool:
    """Whether the schedule has a step to take at `now`."""
    active = snapshot.active()
    if active is None or any(a.not_after <= now for a in snapshot.authorities):
        return True
    prepared = next((a for a in snapshot.authorities if a.state is _State.PREPARED), None)
    if prepared is None:
        return now >= active.at(PREPARE_AT)
    return now >= _activation_time(active, prepared, published)


def _activate(authorities: Sequence[_Authority]) -> list[_Authority]:
    """The prepared authority signs; the active one retires (published until it expires)."""
    after = {_State.ACTIVE: _State.RETIRING, _State.PREPARED: _State.ACTIVE}
    return [replace(a, state=after.get(a.state, a.state)) for a in authorities]


def _ca_name(trust_domain: str, serial: int) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether")]
    if len(trust_domain) <= 64:  # X.520's ub-common-name; the URI SAN names it in any case
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, trust_domain))
    # Each authority's name is its own (as SPIRE's are), so a CRL's issuer and a chain's
    # path name one authority, not whichever shares the trust domain's name.
    attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, format(serial, "x")))
    return x509.Name(attributes)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
# X509-SVID.md §4.3: digitalSignature is required; keyEncipherment and keyAgreement are
# allowed and set, as SPIRE does, for TLS stacks that still look for them.
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
_LEAF_SUBJECT = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether")])


@dataclass(frozen=True, slots=True)
class _Maker:
    """Makes new authorities inside one transaction: their private keys are written
    through the barrier there, so they exist exactly when the metadata naming them does."""

    tx: Tx
    barrier: Barrier
    trust_domain: str
    now: dt.datetime
    ttl: dt.timedelta
    #: How long a prepared authority is published before the schedule activates it.
    published: dt.timedelta

    def __call__(self, state: _State) -> _Authority:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        jwt_key = ec.generate_private_key(ec.SECP256R1())
        authority_id = "sca_" + secrets.token_hex(8)
        jwt_kid = secrets.token_hex(16)
        serial = x509.random_serial_number()
        name = _ca_name(self.trust_domain, serial)
        start = _whole_seconds(self.now)
        public = ca_key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(start - BACKDATE)
            .not_valid_after(start + self.ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(str(SpiffeId(self.trust_domain, "")))]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        for record, key in ((authority_id, ca_key), (jwt_kid, jwt_key)):
            self.barrier.put_secret(
                self.tx, f"spiffe-ca/{record}", _SEALED_PURPOSE, _pem_private(key)
            )
        return _Authority(
            authority_id, state, certificate, jwt_kid, jwt_key.public_key(), ca_key, jwt_key
        )


#: A change to the authorities, given them and a maker of new ones.
_Change = Callable[[list[_Authority], _Maker], list[_Authority]]


def _schedule(authorities: list[_Authority], make: _Maker) -> list[_Authority]:
    """The authorities after the schedule's due step at `make.now`. One step at a time:
    an authority prepared here is activated by a later call, never by this one."""
    now = make.now
    kept = [a for a in authorities if a.not_after > now]
    if not any(a.state is _State.ACTIVE for a in kept):
        if any(a.state is _State.PREPARED for a in kept):
            # The active one expired unattended (Tether was down or sealed): the prepared
            # one has at least been published since it was made.
            kept = _activate(kept)
        else:
            kept.append(make(_State.ACTIVE))
    active = next(a for a in kept if a.state is _State.ACTIVE)
    prepared = next((a for a in kept if a.state is _State.PREPARED), None)
    if prepared is None:
        if now >= active.at(PREPARE_AT):
            kept.append(make(_State.PREPARED))
    elif now >= _activation_time(active, prepared, make.published):
        kept = _activate(kept)
    return kept


def _prepare(authorities: list[_Authority], make: _Maker) -> list[_Authority]:
    if any(a.state is _State.PREPARED for a in authorities):
        return authorities
    return [*authorities, make(_State.PREPARED)]


def _activate_prepared(authorities: list[_Authority], make: _Maker) -> list[_Authority]:
    if not any(a.state is _State.PREPARED for a in authorities):
        raise SpiffeError(
            "no next authority is prepared: prepare one, and let relying parties fetch the "
            "bundle, before activating it"
        )
    return _activate(authorities)


class TrustDomainCA:
    """The CA of the estate's trust domain (none while the estate names no trust domain)."""

    def __init__(
        self,
        store: Store,
        barrier: Barrier,
        trust_domain: Callable[[], str | None],
        clock: Callable[[], dt.datetime] = utcnow,
        *,
        ca_ttl: dt.timedelta = dt.timedelta(days=7),
    ) -> None:
        if ca_ttl < 10 * BACKDATE:
            raise ValueError("a CA must live at least 10 minutes")
        self._store = store
        self._barrier = barrier
        self._trust_domain = trust_domain
        self._clock = clock
        self._ca_ttl = ca_ttl
        self._refresh_hint = max(1, min(MAX_REFRESH_HINT, int(ca_ttl.total_seconds()) // 30))
        self._published = dt.timedelta(seconds=self._refresh_hint)
        self._lock = threading.Lock()
        # One load or update at a time in this process (the store orders processes).
        self._write_lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        #: Called (outside any lock) after the bundle changed: an authority prepared,
        #: activated, retired or dropped here, or such a change by another process read
        #: here (and the first load).
        self.on_changed: list[Callable[[Bundle], None]] = []

    # -- the schedule --

    def ensure(self) -> bool:
        """Load the authorities, create the first if there is none, and take the
        schedule's due step (prepare, activate, drop the expired). True when the bundle
        changed here (the first load counts). A no-op (False) while sealed or with no trust
        domain; one read of a metadata row when nothing is due and no one else changed
        anything, so it may be called often."""
        if self._barrier.sealed:
            self.forget()  # in case sealing did not say so: no key stays in memory
            return False
        trust_domain = self._trust_domain()
        if trust_domain is None:
            return False
        try:
            return self._refresh(trust_domain)
        except Sealed:
            return False  # sealed meanwhile

    def prepare_next(self) -> None:
        """Operator rotation, step one: prepare the next authority now. It is published at
        once and signs nothing until `activate_next` (or the schedule) activates it.
        Nothing happens when one is prepared already."""
        self._change(self._require_trust_domain(), _prepare)

    def activate_next(self) -> None:
        """Operator rotation, step two: the prepared authority signs from now on; the one it
        replaces stays published until it expires, and so do the SVIDs it signed."""
        self._change(self._require_trust_domain(), _activate_prepared)

    def forget(self) -> None:
        """Drop the private keys from memory (on seal)."""
        with self._lock:
            self._snapshot = None

    def _require_trust_domain(self) -> str:
        if self._barrier.sealed:
            raise CaUnavailable("Tether is sealed: the trust domain's CA keys are locked")
        trust_domain = self._trust_domain()
        if trust_domain is None:
            raise CaUnavailable("the estate names no trust_domain: there is no SPIFFE CA")
        return trust_domain

    def _held(self) -> _Snapshot | None:
        with self._lock:
            return self._snapshot

    def _hold(self, snapshot: _Snapshot) -> None:
        with self._lock:
            # Sealed while this was being read: keep no key in memory.
            self._snapshot = None if self._barrier.sealed else snapshot

    def _refresh(self, trust_domain: str) -> bool:
        """Read what is stored; write only when the schedule has a step to take (or there
        is nothing yet), so a change made elsewhere is loaded without another event."""
        with self._write_lock:
            previous = self._held()
            with self._store.read() as tx:
                raw = tx.get_meta(_META)
                current = self._read(tx, raw, trust_domain, previous)
            if current is None or _due(current, self._clock(), self._published):
                current = self._write(trust_domain, None, previous)
            else:
                self._hold(current)
        return self._announce(previous, current)

    def _change(self, trust_domain: str, change: _Change) -> None:
        with self._write_lock:
            previous = self._held()
            current = self._write(trust_domain, change, previous)
        self._announce(previous, current)

    def _read(
        self, tx: Tx, raw: bytes | None, trust_domain: str, previous: _Snapshot | None
    ) -> _Snapshot | None:
        """The stored authorities (with keys) if they are this trust domain's, else None."""
        if raw is None:
            return None
        digest = hashlib.sha256(raw).digest()
        if previous is not None and previous.digest == digest:
            return previous if previous.trust_domain == trust_domain else None
        domain, sequence, stored = _decode(raw)
        if domain != trust_domain:
            return None
        return _Snapshot(digest, domain, sequence, tuple(self._with_keys(tx, stored, previous)))

    def _write(
        self, trust_domain: str, change: _Change | None, previous: _Snapshot | None
    ) -> _Snapshot:
        with self._store.transaction() as tx:
            # Publishing first takes the event counter's lock until commit: another
            # process writing at the same time waits here, then reads what this one wrote
            # (two first authorities, one of them lost, would mean SVIDs that nobody's
            # bundle trusts).
            tx.publish(SPIFFE_CA_CHANGED, {})
            raw = tx.get_meta(_META)
            domain, sequence, stored = _decode(raw) if raw is not None else (trust_domain, 0, [])
            if domain != trust_domain:
                log.warning(
                    "the trust domain changed from %s to %s: its CA starts anew",
                    domain,
                    trust_domain,
                )
                stored = []
            make = _Maker(
                tx, self._barrier, trust_domain, self._clock(), self._ca_ttl, self._published
            )
            authorities = _schedule(list(stored), make)
            if change is not None:
                authorities = change(authorities, make)
            if raw is None or domain != trust_domain or authorities != stored:
                sequence += 1
                raw = _encode(trust_domain, sequence, authorities)
                tx.put_meta(_META, raw)
            current = _Snapshot(
                hashlib.sha256(raw).digest(),
                trust_domain,
                sequence,
                tuple(self._with_keys(tx, authorities, previous)),
            )
        self._hold(current)
        return current

    def _announce(self, previous: _Snapshot | None, current: _Snapshot) -> bool:
        """Tell `on_changed` (outside every lock) when the bundle differs from before."""
        if previous is not None and previous.digest == current.digest:
            return False
        bundle = self._bundle_of(current)
        for callback in list(self.on_changed):
            try:
                callback(bundle)
            except Exception:
                log.exception("a SPIFFE bundle change callback failed")
        return True

    def _with_keys(
        self, tx: Tx, authorities: Sequence[_Authority], previous: _Snapshot | None
    ) -> list[_Authority]:
        """The authorities with their private keys: those held already (keys never change
        under an id), else read through the barrier."""
        held = {a.id: a for a in previous.authorities if a.ca_key} if previous else {}
        loaded = []
        for authority in authorities:
            if authority.ca_key is not None:
                loaded.append(authority)  # made just now
            elif authority.id in held:
                known = held[authority.id]
                loaded.append(replace(authority, ca_key=known.ca_key, jwt_key=known.jwt_key))
            else:
                ca_pem = self._barrier.get_secret(tx, f"spiffe-ca/{authority.id}")
                jwt_pem = self._barrier.get_secret(tx, f"spiffe-ca/{authority.jwt_kid}")
                loaded.append(
                    replace(authority, ca_key=_load_private(ca_pem), jwt_key=_load_private(jwt_pem))
                )
        return loaded

    def _current(self) -> _Snapshot:
        """The authorities now, for signing and publishing: CaUnavailable while sealed or
        with no trust domain; loaded, and the schedule's due step taken, first."""
        trust_domain = self._require_trust_domain()
        snapshot = self._held()
        if (
            snapshot is None
            or snapshot.trust_domain != trust_domain
            or _due(snapshot, self._clock(), self._published)
        ):
            try:
                self._refresh(trust_domain)
            except Sealed:
                raise CaUnavailable(
                    "Tether is sealed: the trust domain's CA keys are locked"
                ) from None
            snapshot = self._held()
            if snapshot is None:
                raise CaUnavailable("Tether is sealed: the trust domain's CA keys are locked")
        return snapshot

    # -- publishing --

    def _bundle_of(self, snapshot: _Snapshot) -> Bundle:
        return Bundle(
            trust_domain=snapshot.trust_domain,
            x509_authorities=tuple(a.certificate for a in snapshot.authorities),
            jwt_authorities={a.jwt_kid: a.jwt_public for a in snapshot.authorities},
            sequence=snapshot.sequence,
            refresh_hint=self._refresh_hint,
        )

    def bundle(self) -> Bundle:
        """The trust bundle: every authority prepared, active or retiring."""
        return self._bundle_of(self._current())

    # -- signing --

    def _signer(self, spiffe_id: SpiffeId) -> _Authority:
        parse_spiffe_id(str(spiffe_id))  # one built by hand is held to the rules too
        snapshot = self._current()
        if spiffe_id.trust_domain != snapshot.trust_domain:
            raise InvalidSpiffeId(f"{spiffe_id} is not in the trust domain {snapshot.trust_domain}")
        if spiffe_id.is_trust_domain:
            # X509-SVID.md §3.1: a leaf's SPIFFE ID has a path; the bare trust domain
            # names its CA.
            raise InvalidSpiffeId(f"{spiffe_id} names the trust domain, not a workload")
        active = snapshot.active()
        if active is None or active.ca_key is None or active.jwt_key is None:
            raise CaUnavailable("the trust domain's active CA key cannot be read")
        return active

    def sign_x509_svid(
        self,
        spiffe_id: SpiffeId,
        public_key: ec.EllipticCurvePublicKey,
        not_after: dt.datetime,
        serial: int | None = None,
    ) -> x509.Certificate:
        """An X509-SVID (X509-SVID.md) for `public_key`, signed by the active authority.
        `not_after` is clamped to the authority's; `serial` defaults to a random one."""
        authority = self._signer(spiffe_id)
        assert authority.ca_key is not None
        if serial is None:
            serial = secrets.randbits(SERIAL_BITS) or 1
        if not 0 < serial < 2**159:  # RFC 5280 §4.1.2.2: positive, at most 20 octets
            raise SpiffeError("an X.509 serial must be positive and at most 20 octets")
        now = _whole_seconds(self._clock())
        end = min(_whole_seconds(not_after), authority.not_after)
        if end <= now:
            raise SpiffeError("an X509-SVID must not end before it starts")
        issuer_key = authority.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        return (
            x509.CertificateBuilder()
            .subject_name(_LEAF_SUBJECT)
            .issuer_name(authority.certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(max(now - BACKDATE, authority.not_before))
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(_LEAF_EKU, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
                critical=False,  # the subject is not empty (X509-SVID.md §3.1)
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key),
                critical=False,
            )
            .sign(authority.ca_key, hashes.SHA256())
        )

    def sign_jwt_svid(
        self,
        spiffe_id: SpiffeId,
        audience: Sequence[str],
        expires_at: dt.datetime,
        *,
        jti: str | None = None,
    ) -> str:
        """A JWT-SVID (JWT-SVID.md): ES256, `sub` the SPIFFE ID, `aud` a list, `exp`
        clamped to the authority's life. `jti` (e.g. the lease id) is added when given."""
        audience = [audience] if isinstance(audience, str) else list(audience)
        if not audience or not all(isinstance(a, str) and a for a in audience):
            raise SpiffeError("a JWT-SVID needs at least one audience (JWT-SVID.md §3.2)")
        authority = self._signer(spiffe_id)
        assert authority.jwt_key is not None
        now = self._clock()
        end = min(expires_at, authority.not_after)
        if end <= now:
            raise SpiffeError("a JWT-SVID must not expire before it is issued")
        claims: dict[str, Any] = {
            "sub": str(spiffe_id),
            "aud": audience,
            "exp": int(end.timestamp()),
            "iat": int(now.timestamp()),
        }
        if jti is not None:
            claims["jti"] = jti
        return jwt.encode(
            claims,
            authority.jwt_key,
            algorithm=JWT_ALGORITHM,
            headers={"kid": authority.jwt_kid, "typ": "JWT"},
        )

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[SpiffeId, dict[str, Any]]:
        """The SPIFFE ID and claims of a JWT-SVID this trust domain signed for `audience`;
        InvalidJwtSvid saying why otherwise (JWT-SVID.md Appendix A)."""
        bundle = self.bundle()
        if not audience:
            raise InvalidJwtSvid("an audience to validate for is required")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidJwtSvid("the token is not a JWT") from None
        alg = header.get("alg")
        if alg != JWT_ALGORITHM:
            # The trust domain's keys are P-256: nothing but ES256 can be ours, and a
            # token naming `none` or an HMAC is refused before any key is touched.
            raise InvalidJwtSvid(f"the algorithm must be {JWT_ALGORITHM}")
        typ = header.get("typ")
        if typ is not None and typ not in ("JWT", "JOSE"):
            raise InvalidJwtSvid("the typ header must be JWT or JOSE")
        kid = header.get("kid")
        key = bundle.jwt_authorities.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidJwtSvid("the token's key (kid) is not in the trust domain's bundle")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],
                audience=audience,
                # Times are checked below by this CA's clock, not the host's.
                options={
                    "require": ["aud", "exp", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise InvalidJwtSvid("the token is not meant for this audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidJwtSvid(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise InvalidJwtSvid("the token's signature does not verify") from None
        now = self._clock().timestamp()
        exp, nbf = claims["exp"], claims.get("nbf")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise InvalidJwtSvid("the exp claim is not a number")
        if exp <= now:
            raise InvalidJwtSvid("the token has expired")
        if nbf is not None and (isinstance(nbf, bool) or not isinstance(nbf, int | float)):
            raise InvalidJwtSvid("the nbf claim is not a number")
        if nbf is not None and nbf > now:
            raise InvalidJwtSvid("the token is not valid yet")
        try:
            spiffe_id = parse_spiffe_id(claims["sub"])
        except InvalidSpiffeId as exc:
            raise InvalidJwtSvid(f"the sub claim is not a SPIFFE ID: {exc}") from None
        if spiffe_id.trust_domain != bundle.trust_domain:
            raise InvalidJwtSvid(f"the subject is not in the trust domain {bundle.trust_domain}")
        return spiffe_id, claims

    # -- revocation --

    def crl(self, revoked: Iterable[tuple[int, dt.datetime]]) -> x509.CertificateRevocationList:
        """A CRL of the active authority listing `revoked` (serial, revocation time)."""
        active = self._current().active()
        if active is None or active.ca_key is None:
            raise CaUnavailable("the trust domain's active CA key cannot be read")
        return self._crl_of(active, list(revoked))

    def crls(
        self, revoked: Iterable[tuple[int, dt.datetime]]
    ) -> tuple[x509.CertificateRevocationList, ...]:
        """One CRL per published authority, each listing every revoked serial: an SVID the
        retiring authority signed is checked against that authority's own CRL."""
        entries = list(revoked)
        return tuple(
            self._crl_of(a, entries) for a in self._current().authorities if a.ca_key is not None
        )

    def _crl_of(
        self, authority: _Authority, revoked: Sequence[tuple[int, dt.datetime]]
    ) -> x509.CertificateRevocationList:
        assert authority.ca_key is not None
        now = _whole_seconds(self._clock())
        issuer_key = authority.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(authority.certificate.subject)
            .last_update(now)
            # Relying parties fetch again by then: a revocation shows within one hint.
            .next_update(now + dt.timedelta(seconds=self._refresh_hint))
            # RFC 5280 §5.2.3: the CRL number only grows (milliseconds of this clock).
            .add_extension(x509.CRLNumber(int(self._clock().timestamp() * 1000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key),
                critical=False,
            )
        )
        seen: set[int] = set()
        for serial, when in revoked:
            if serial in seen:
                continue
            seen.add(serial)
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(_whole_seconds(when))
                .build()
            )
        return builder.sign(authority.ca_key, hashes.SHA256())
