"""SVIDs as the X509-SVID and JWT-SVID specifications require, checked the way relying
parties check them (cryptography's RFC 5280 path validation, PyJWT against the bundle),
and the providers that mint them for leases."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, VerificationError
from cryptography.x509.verification import Store as TrustStore

from tests.clock import SettableClock
from tether.barrier import Barrier
from tether.model import Identity, Kind, Lease, LeaseState, Profile
from tether.providers import JWT_TOKEN_TYPE
from tether.spiffe._ca import ACTIVATE_AT, Bundle, TrustDomainCA
from tether.spiffe._ids import SpiffeId, default_spiffe_id, parse_spiffe_id
from tether.spiffe._svid import (
    X509_SVID_TOKEN_TYPE,
    JwtSvidProvider,
    X509SvidProvider,
    svid_serial,
)
from tether.spiffe.errors import InvalidJwtSvid, InvalidSpiffeId, SpiffeError
from tether.store import Store, open_store

WORKLOAD = parse_spiffe_id("spiffe://example.org/prod/svc")


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def memory_store() -> Iterator[Store]:
    store = open_store("memory://")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def barrier(memory_store: Store) -> Barrier:
    barrier = Barrier(memory_store)
    with memory_store.transaction() as tx:
        barrier.initialize(tx, shares=1, threshold=1)
    return barrier


@pytest.fixture
def ca(memory_store: Store, barrier: Barrier, clock: SettableClock) -> TrustDomainCA:
    ca = TrustDomainCA(memory_store, barrier, lambda: "example.org", clock)
    ca.ensure()
    return ca


def _verifier(bundle: Bundle, when: dt.datetime) -> PolicyBuilder:
    return PolicyBuilder().store(TrustStore(list(bundle.x509_authorities))).time(when)


def _sign(
    ca: TrustDomainCA,
    clock: SettableClock,
    spiffe_id: SpiffeId = WORKLOAD,
    serial: int | None = 0x1234,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.sign_x509_svid(spiffe_id, key.public_key(), clock.now + dt.timedelta(hours=1), serial)
    return key, cert


# -- X509-SVID --


def test_an_x509_svid_is_what_the_specification_requires(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    key, cert = _sign(ca, clock)
    (authority,) = ca.bundle().x509_authorities
    ext = cert.extensions
    # §2: exactly one URI SAN, the SPIFFE ID (and no other name of any type).
    san = ext.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert list(san) == [x509.UniformResourceIdentifier("spiffe://example.org/prod/svc")]
    # §4.1: a leaf, not a CA, marked critical.
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    # §4.3: key usage critical, digitalSignature, never keyCertSign or cRLSign.
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    # §4.4: serverAuth and clientAuth.
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    # The key, the issuer, the algorithm, the serial, the times.
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.issuer == authority.subject
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert cert.serial_number == 0x1234
    now = clock.now.replace(microsecond=0)
    assert cert.not_valid_before_utc == now - dt.timedelta(minutes=1)
    assert cert.not_valid_after_utc == (clock.now + dt.timedelta(hours=1)).replace(microsecond=0)
    assert len(cert.subject) > 0  # so the SAN need not be critical (§3.1)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    cert.verify_directly_issued_by(authority)


def test_an_x509_svid_chains_to_the_bundle(ca: TrustDomainCA, clock: SettableClock) -> None:
    _, cert = _sign(ca, clock)
    bundle = ca.bundle()
    verified = _verifier(bundle, clock.now).build_client_verifier().verify(cert, [])
    assert verified.subjects == [x509.UniformResourceIdentifier(str(WORKLOAD))]
    assert verified.chain[-1] == bundle.x509_authorities[0]
    # Past its end, or against another trust domain's bundle, it does not verify.
    late = _verifier(bundle, clock.now + dt.timedelta(hours=2)).build_client_verifier()
    with pytest.raises(VerificationError):
        late.verify(cert, [])
    stranger_store = open_store("memory://")
    stranger_store.migrate()
    stranger_barrier = Barrier(stranger_store)
    with stranger_store.transaction() as tx:
        stranger_barrier.initialize(tx, shares=1, threshold=1)
    stranger = TrustDomainCA(stranger_store, stranger_barrier, lambda: "example.org", clock)
    foreign = _verifier(stranger.bundle(), clock.now).build_client_verifier()
    with pytest.raises(VerificationError):
        foreign.verify(cert, [])


def test_an_x509_svid_works_as_a_tls_key_pair(ca: TrustDomainCA, clock: SettableClock) -> None:
    """The certificate's key signs and the certificate's public key verifies: a TLS stack
    given the PEMs can prove possession."""
    key, cert = _sign(ca, clock)
    signature = key.sign(b"handshake", ec.ECDSA(hashes.SHA256()))
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"handshake", ec.ECDSA(hashes.SHA256()))


def test_svid_ids_must_be_workloads_of_this_trust_domain(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    with pytest.raises(InvalidSpiffeId, match="trust domain"):
        _sign(ca, clock, parse_spiffe_id("spiffe://other.org/prod/svc"))
    with pytest.raises(InvalidSpiffeId, match="not a workload"):
        _sign(ca, clock, parse_spiffe_id("spiffe://example.org"))
    with pytest.raises(InvalidSpiffeId):
        ca.sign_jwt_svid(parse_spiffe_id("spiffe://other.org/x"), ["a"], clock.now)
    # An ID built by hand, not parsed, is held to the same rules.
    for path in ("/a b", "/a/../b", "/", "/x?y"):
        with pytest.raises(InvalidSpiffeId):
            _sign(ca, clock, SpiffeId("example.org", path))


def test_serials(ca: TrustDomainCA, clock: SettableClock) -> None:
    randoms = {_sign(ca, clock, serial=None)[1].serial_number for _ in range(20)}
    assert len(randoms) == 20
    assert all(0 < s < 2**127 for s in randoms)
    for bad in (0, -1, 2**160):
        with pytest.raises(SpiffeError, match="serial"):
            _sign(ca, clock, serial=bad)


def test_an_svid_must_end_after_it_starts(ca: TrustDomainCA, clock: SettableClock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SpiffeError):
        ca.sign_x509_svid(WORKLOAD, key.public_key(), clock.now - dt.timedelta(seconds=5), 1)
    with pytest.raises(SpiffeError):
        ca.sign_jwt_svid(WORKLOAD, ["a"], clock.now - dt.timedelta(seconds=5))


def test_svid_serial_is_deterministic_and_127_bits() -> None:
    assert svid_serial("lse_abc") == svid_serial("lse_abc")
    serials = {svid_serial(f"lse_{n}") for n in range(1000)}
    assert len(serials) == 1000
    assert all(0 < s < 2**127 for s in serials)
    assert max(serials).bit_length() == 127  # uses the whole width


# -- JWT-SVID --


def _bundle_key(bundle: Bundle, kid: str) -> jwt.PyJWK:
    (entry,) = [
        k for k in bundle.to_jwks()["keys"] if k.get("use") == "jwt-svid" and k["kid"] == kid
    ]
    return jwt.PyJWK(entry, algorithm="ES256")


def test_a_jwt_svid_is_what_the_specification_requires(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    expires = clock.now + dt.timedelta(minutes=5)
    token = ca.sign_jwt_svid(WORKLOAD, ["https://reports.example.org"], expires, jti="lse_1")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": header["kid"], "typ": "JWT"}  # nothing else
    bundle = ca.bundle()
    claims = jwt.decode(
        token,
        _bundle_key(bundle, header["kid"]),
        algorithms=["ES256"],
        audience="https://reports.example.org",
        options={"require": ["aud", "exp", "sub"], "verify_iat": False},
    )
    assert claims == {
        "sub": "spiffe://example.org/prod/svc",
        "aud": ["https://reports.example.org"],
        "exp": int(expires.timestamp()),
        "iat": int(clock.now.timestamp()),
        "jti": "lse_1",
    }
    assert ca.validate_jwt_svid(token, "https://reports.example.org") == (WORKLOAD, claims)


def test_a_jwt_svid_needs_an_audience(ca: TrustDomainCA, clock: SettableClock) -> None:
    for audience in ([], [""]):
        with pytest.raises(SpiffeError, match="audience"):
            ca.sign_jwt_svid(WORKLOAD, audience, clock.now + dt.timedelta(minutes=5))


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _real_jwt_key(store: Store, barrier: Barrier, kid: str) -> ec.EllipticCurvePrivateKey:
    """The CA's own JWT key, read back through the barrier: forgeries signed with it test
    the checks after the signature."""
    with store.read() as tx:
        pem = barrier.get_secret(tx, f"spiffe-ca/{kid}")
    assert pem is not None
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_validation_refuses_what_this_trust_domain_did_not_sign_for_the_audience(
    ca: TrustDomainCA, clock: SettableClock, memory_store: Store, barrier: Barrier
) -> None:
    token = ca.sign_jwt_svid(WORKLOAD, ["aud"], clock.now + dt.timedelta(minutes=5))
    header_b64, payload_b64, signature = token.split(".")
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    public_pem = (
        ca.bundle()
        .jwt_authorities[kid]
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    attacker = ec.generate_private_key(ec.SECP256R1())
    real = _real_jwt_key(memory_store, barrier, kid)

    def ours(body: dict[str, object], **header: object) -> str:
        return jwt.encode(body, real, algorithm="ES256", headers={"kid": kid, **header})

    hs_input = f"{_b64({'alg': 'HS256', 'kid': kid})}.{payload_b64}"
    hs_mac = hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()
    hs256 = hs_input + "." + base64.urlsafe_b64encode(hs_mac).rstrip(b"=").decode()
    forged = {
        "alg none": (f"{_b64({'alg': 'none', 'kid': kid})}.{payload_b64}.", "algorithm"),
        "HS256 keyed with the public key": (hs256, "algorithm"),
        "unknown kid": (
            jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": "nope"}),
            "kid",
        ),
        "no kid": (jwt.encode(claims, real, algorithm="ES256"), "kid"),
        "attacker key, real kid": (
            jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": kid}),
            "signature",
        ),
        "tampered payload": (
            f"{header_b64}.{_b64({**claims, 'sub': 'spiffe://example.org/admin'})}.{signature}",
            "signature",
        ),
        "no aud": (ours({k: v for k, v in claims.items() if k != "aud"}), "aud"),
        "no exp": (ours({k: v for k, v in claims.items() if k != "exp"}), "exp"),
        "no sub": (ours({k: v for k, v in claims.items() if k != "sub"}), "sub"),
        "sub not a SPIFFE ID": (ours({**claims, "sub": "svc"}), "SPIFFE ID"),
        "sub in another trust domain": (
            ours({**claims, "sub": "spiffe://other.org/svc"}),
            "trust domain",
        ),
        "typ not JWT or JOSE": (ours(claims, typ="at+jwt"), "typ"),
        "not valid yet": (ours({**claims, "nbf": claims["exp"] - 1}), "not valid yet"),
        "garbage": ("not.a.jwt", "not a JWT"),
        "empty": ("", "not a JWT"),
    }
    for name, (value, reason) in forged.items():
        with pytest.raises(InvalidJwtSvid, match=reason):
            ca.validate_jwt_svid(value, "aud")
        assert name
    assert ca.validate_jwt_svid(token, "aud")[0] == WORKLOAD


def test_validation_refuses_another_audience(ca: TrustDomainCA, clock: SettableClock) -> None:
    token = ca.sign_jwt_svid(WORKLOAD, ["reports"], clock.now + dt.timedelta(minutes=5))
    with pytest.raises(InvalidJwtSvid, match="audience"):
        ca.validate_jwt_svid(token, "billing")
    with pytest.raises(InvalidJwtSvid, match="audience"):
        ca.validate_jwt_svid(token, "")
    assert ca.validate_jwt_svid(token, "reports")[0] == WORKLOAD


def test_validation_refuses_an_expired_token(ca: TrustDomainCA, clock: SettableClock) -> None:
    token = ca.sign_jwt_svid(WORKLOAD, ["a"], clock.now + dt.timedelta(minutes=5))
    clock.advance(minutes=4, seconds=58)
    assert ca.validate_jwt_svid(token, "a")[0] == WORKLOAD
    clock.advance(seconds=2)
    with pytest.raises(InvalidJwtSvid, match="expired"):
        ca.validate_jwt_svid(token, "a")


def test_tokens_signed_before_a_rotation_validate_after_it(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    (first,) = ca.bundle().x509_authorities
    clock.now = (
        first.not_valid_before_utc
        + (first.not_valid_after_utc - first.not_valid_before_utc)
        * ACTIVATE_AT[0]
        // ACTIVATE_AT[1]
    )
    ca.ensure()  # prepares the next
    token = ca.sign_jwt_svid(WORKLOAD, ["a"], clock.now + dt.timedelta(hours=1))
    old_kid = jwt.get_unverified_header(token)["kid"]
    clock.advance(minutes=10)
    ca.ensure()  # activates it
    newer = ca.sign_jwt_svid(WORKLOAD, ["a"], clock.now + dt.timedelta(hours=1))
    assert jwt.get_unverified_header(newer)["kid"] != old_kid
    assert ca.validate_jwt_svid(token, "a")[0] == WORKLOAD
    assert ca.validate_jwt_svid(newer, "a")[0] == WORKLOAD


# -- the providers --


def _identity(identity_id: str = "svc") -> Identity:
    return Identity(identity_id, Kind.WORKLOAD, "team", "p", "j", "prod")


def _lease(
    clock: SettableClock, provider: str, lease_id: str = "lse_1", audience: str | None = None
) -> Lease:
    return Lease(
        lease_id,
        "svc",
        "team",
        provider,
        clock.now,
        clock.now + dt.timedelta(minutes=30),
        LeaseState.ACTIVE,
        audience=audience,
    )


def _spiffe_id_of(identity: Identity) -> SpiffeId:
    return default_spiffe_id("example.org", identity.environment, identity.id)


def test_the_x509_svid_provider(ca: TrustDomainCA, clock: SettableClock) -> None:
    provider = X509SvidProvider(ca, _spiffe_id_of)
    assert provider.name == "x509-svid" and provider.external is False
    lease = _lease(clock, "x509-svid")
    issued = provider.issue(lease, _identity(), None)
    assert issued.token_type == X509_SVID_TOKEN_TYPE
    key = serialization.load_pem_private_key(issued.secret.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    # PKCS#8 PEM, as the Workload API's clients load it: the key re-serialized so is the same.
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert issued.secret.encode() == pkcs8
    cert = x509.load_pem_x509_certificate(issued.extra["certificate"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert issued.extra["spiffe_id"] == "spiffe://example.org/prod/svc"
    assert cert.serial_number == svid_serial(lease.id)
    assert issued.extra["serial"] == format(cert.serial_number, "x")
    assert cert.not_valid_after_utc == lease.expires_at.replace(microsecond=0)
    assert issued.extra["expires_at"] == cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    authorities = x509.load_pem_x509_certificates(issued.extra["bundle"].encode())
    assert authorities == list(ca.bundle().x509_authorities)
    bundle = ca.bundle()
    verified = _verifier(bundle, clock.now).build_client_verifier().verify(cert, [])
    assert verified.subjects == [x509.UniformResourceIdentifier("spiffe://example.org/prod/svc")]
    assert issued.secret not in repr(issued)
    assert provider.revoke(lease) is None


def test_a_revoked_lease_s_svid_is_on_the_crl(ca: TrustDomainCA, clock: SettableClock) -> None:
    provider = X509SvidProvider(ca, _spiffe_id_of)
    kept = provider.issue(_lease(clock, "x509-svid", "lse_kept"), _identity(), None)
    ended = provider.issue(_lease(clock, "x509-svid", "lse_ended"), _identity(), None)
    crl = ca.crl([(svid_serial("lse_ended"), clock.now)])
    for issued, listed in ((ended, True), (kept, False)):
        cert = x509.load_pem_x509_certificate(issued.extra["certificate"].encode())
        assert crl.issuer == cert.issuer
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        assert (entry is not None) is listed


def test_the_jwt_svid_provider(ca: TrustDomainCA, clock: SettableClock) -> None:
    provider = JwtSvidProvider(ca, _spiffe_id_of)
    assert provider.name == "jwt-svid" and provider.external is False
    profile = Profile("reports", "jwt-svid", dt.timedelta(hours=1), audience="reports")
    lease = _lease(clock, "jwt-svid")
    issued = provider.issue(lease, _identity(), profile)
    assert issued.token_type == JWT_TOKEN_TYPE
    spiffe_id, claims = ca.validate_jwt_svid(issued.secret, "reports")
    assert spiffe_id == WORKLOAD
    assert claims["aud"] == ["reports"]
    assert claims["exp"] == int(lease.expires_at.timestamp())
    assert claims["jti"] == lease.id
    assert issued.extra["spiffe_id"] == str(WORKLOAD)
    assert issued.extra["audience"] == ["reports"]
    assert provider.revoke(lease) is None
    # The lease's audience, when it has one, is what the token is for.
    other = provider.issue(_lease(clock, "jwt-svid", "lse_2", "billing"), _identity(), profile)
    assert ca.validate_jwt_svid(other.secret, "billing")[0] == WORKLOAD
    with pytest.raises(InvalidJwtSvid):
        ca.validate_jwt_svid(other.secret, "reports")


def test_the_jwt_svid_provider_needs_an_audience(ca: TrustDomainCA, clock: SettableClock) -> None:
    provider = JwtSvidProvider(ca, _spiffe_id_of)
    profile = Profile("reports", "jwt-svid", dt.timedelta(hours=1))
    for given in (profile, None):
        with pytest.raises(SpiffeError, match="audience"):
            provider.issue(_lease(clock, "jwt-svid"), _identity(), given)


def test_an_identity_id_that_is_no_path_segment_gets_no_svid(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    provider = X509SvidProvider(ca, _spiffe_id_of)
    with pytest.raises(InvalidSpiffeId, match="spiffe_id"):
        provider.issue(_lease(clock, "x509-svid"), _identity("svc:reports"), None)
