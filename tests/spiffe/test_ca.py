"""The trust domain's CA: its certificate, its bundle, SPIRE's rotation schedule, and its
keys, which exist in the store only sealed by the barrier.

Relying parties must never meet an SVID signed by a key their bundle lacks, and nothing
signed before a rotation may fail verification after it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store as TrustStore

from tests.clock import SettableClock
from tests.persisted import persisted_sql_bytes
from tether.barrier import Barrier, encode_share
from tether.spiffe._ca import (
    ACTIVATE_AT,
    PREPARE_AT,
    SPIFFE_CA_CHANGED,
    Bundle,
    TrustDomainCA,
)
from tether.spiffe._ids import parse_spiffe_id
from tether.spiffe.errors import CaUnavailable, SpiffeError
from tether.store import Store

TTL = dt.timedelta(days=7)
WORKLOAD = parse_spiffe_id("spiffe://example.org/prod/svc")


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def share(store: Store) -> tuple[Barrier, str]:
    barrier = Barrier(store)
    with store.transaction() as tx:
        (part,) = barrier.initialize(tx, shares=1, threshold=1)
    return barrier, encode_share(part)


@pytest.fixture
def barrier(share: tuple[Barrier, str]) -> Barrier:
    return share[0]


@pytest.fixture
def ca(store: Store, barrier: Barrier, clock: SettableClock) -> TrustDomainCA:
    return TrustDomainCA(store, barrier, lambda: "example.org", clock, ca_ttl=TTL)


def _svid(
    ca: TrustDomainCA, clock: SettableClock, life: dt.timedelta = dt.timedelta(hours=1)
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return ca.sign_x509_svid(WORKLOAD, key.public_key(), clock.now + life, 7)


def _verifies(cert: x509.Certificate, bundle: Bundle, when: dt.datetime) -> bool:
    """RFC 5280 path validation of an X509-SVID against the bundle, as a relying party."""
    verifier = (
        PolicyBuilder()
        .store(TrustStore(list(bundle.x509_authorities)))
        .time(when)
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, [])
    except Exception:
        return False
    return True


def _issuer_of(cert: x509.Certificate, bundle: Bundle) -> x509.Certificate:
    (issuer,) = [c for c in bundle.x509_authorities if c.subject == cert.issuer]
    return issuer


def _split_der(data: bytes) -> list[x509.Certificate]:
    """Concatenated DER certificates, split by their outer SEQUENCE lengths."""
    certs = []
    while data:
        assert data[0] == 0x30
        if data[1] < 0x80:
            size, head = data[1], 2
        else:
            count = data[1] & 0x7F
            size, head = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
        certs.append(x509.load_der_x509_certificate(data[: head + size]))
        data = data[head + size :]
    return certs


def _at(cert: x509.Certificate, fraction: tuple[int, int]) -> dt.datetime:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * fraction[0] // fraction[1]


# -- the first authority --


def test_the_first_ensure_creates_one_active_authority(ca: TrustDomainCA) -> None:
    assert ca.ensure() is True
    assert ca.ensure() is False  # nothing due, nothing changed
    bundle = ca.bundle()
    assert bundle.trust_domain == "example.org"
    assert bundle.sequence == 1
    assert len(bundle.x509_authorities) == 1
    assert len(bundle.jwt_authorities) == 1


def test_bundle_creates_the_authority_when_ensure_was_never_called(ca: TrustDomainCA) -> None:
    assert len(ca.bundle().x509_authorities) == 1


def test_the_ca_certificate(ca: TrustDomainCA, clock: SettableClock) -> None:
    (cert,) = ca.bundle().x509_authorities
    assert cert.issuer == cert.subject  # self-signed
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Tether"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example.org"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= TTL
    assert cert.not_valid_before_utc < clock.now < cert.not_valid_after_utc


def test_the_bundle_as_a_spiffe_bundle(ca: TrustDomainCA) -> None:
    bundle = ca.bundle()
    doc = bundle.to_jwks()
    assert doc["spiffe_sequence"] == bundle.sequence == 1
    assert isinstance(doc["spiffe_refresh_hint"], int) and doc["spiffe_refresh_hint"] > 0
    assert json.loads(json.dumps(doc)) == doc
    x509_keys = [k for k in doc["keys"] if k["use"] == "x509-svid"]
    jwt_keys = [k for k in doc["keys"] if k["use"] == "jwt-svid"]
    assert len(x509_keys) == 1 and len(jwt_keys) == 1
    (x509_key,) = x509_keys
    # X509-SVID.md §6.1: no kid, exactly one certificate in x5c (standard base64 DER).
    assert "kid" not in x509_key
    (der,) = x509_key["x5c"]
    cert = x509.load_der_x509_certificate(base64.b64decode(der))
    assert cert == bundle.x509_authorities[0]
    assert x509_key["kty"] == "EC" and x509_key["crv"] == "P-256"
    # The JWK's own parameters are the certificate's key.
    from jwt import PyJWK

    jwk_public = PyJWK({k: v for k, v in x509_key.items() if k != "x5c"}).key
    assert jwk_public.public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    # JWT-SVID.md §6.1: a kid, the key itself.
    (jwt_key,) = jwt_keys
    assert jwt_key["kid"] in bundle.jwt_authorities
    assert (
        PyJWK(jwt_key).key.public_numbers()
        == bundle.jwt_authorities[jwt_key["kid"]].public_numbers()
    )
    for key in doc["keys"]:
        assert "d" not in key  # never a private part


def test_the_workload_api_bundle_formats(ca: TrustDomainCA) -> None:
    bundle = ca.bundle()
    assert _split_der(bundle.x509_der()) == list(bundle.x509_authorities)
    from jwt import PyJWKSet

    keys = PyJWKSet.from_json(bundle.jwks_json().decode()).keys
    assert {k.key_id for k in keys} == set(bundle.jwt_authorities)


def test_a_long_trust_domain_has_no_common_name(store: Store, barrier: Barrier) -> None:
    name = "a" * 60 + ".example.org"  # over X.520's 64 for a common name
    ca = TrustDomainCA(store, barrier, lambda: name)
    (cert,) = ca.bundle().x509_authorities
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{name}"]


# -- the schedule --


def test_the_next_authority_is_published_before_it_signs(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    changes: list[Bundle] = []
    ca.on_changed.append(changes.append)
    ca.ensure()
    (first,) = ca.bundle().x509_authorities
    prepare_at = _at(first, PREPARE_AT)
    activate_at = _at(first, ACTIVATE_AT)

    clock.now = prepare_at - dt.timedelta(seconds=1)
    assert ca.ensure() is False
    assert len(ca.bundle().x509_authorities) == 1

    clock.now = prepare_at
    assert ca.ensure() is True
    prepared = ca.bundle()
    assert len(prepared.x509_authorities) == 2 and len(prepared.jwt_authorities) == 2
    assert prepared.sequence > 1
    assert changes[-1].sequence == prepared.sequence
    # Still signed by the first authority: relying parties are learning the second.
    before = _svid(ca, clock, life=TTL)  # clamped: lives as long as the first authority
    assert _issuer_of(before, prepared) == first

    clock.now = activate_at - dt.timedelta(seconds=1)
    assert ca.ensure() is False
    assert _issuer_of(_svid(ca, clock), prepared) == first

    clock.now = activate_at
    assert ca.ensure() is True
    activated = ca.bundle()
    assert activated.sequence > prepared.sequence
    assert set(activated.x509_authorities) == set(prepared.x509_authorities)
    after = _svid(ca, clock)
    (second,) = [c for c in prepared.x509_authorities if c != first]
    assert _issuer_of(after, activated) == second
    # Both verify against the bundle relying parties hold, before and after.
    assert _verifies(before, activated, clock.now)
    assert _verifies(after, activated, clock.now)
    assert _verifies(after, prepared, clock.now)  # the bundle fetched before activation

    # The first stays published until it expires, then is dropped.
    clock.now = first.not_valid_after_utc - dt.timedelta(seconds=1)
    ca.ensure()
    assert first in ca.bundle().x509_authorities
    clock.now = first.not_valid_after_utc
    assert ca.ensure() is True
    assert first not in ca.bundle().x509_authorities
    assert second in ca.bundle().x509_authorities
    assert [b.sequence for b in changes] == sorted({b.sequence for b in changes})


def test_svids_never_outlive_the_authority_that_signed_them(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    (first,) = ca.bundle().x509_authorities
    clock.now = _at(first, ACTIVATE_AT) - dt.timedelta(minutes=1)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.sign_x509_svid(WORKLOAD, key.public_key(), clock.now + dt.timedelta(days=30), 9)
    assert cert.issuer == first.subject
    assert cert.not_valid_after_utc == first.not_valid_after_utc
    token = ca.sign_jwt_svid(WORKLOAD, ["aud"], clock.now + dt.timedelta(days=30))
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] <= first.not_valid_after_utc.timestamp()


def test_the_schedule_runs_for_many_rotations(ca: TrustDomainCA, clock: SettableClock) -> None:
    """Every SVID, signed at any moment, verifies until it expires against every bundle
    published after it was signed."""
    signed: list[x509.Certificate] = []
    authorities: set[x509.Certificate] = set()
    for _ in range(int(5 * TTL / dt.timedelta(hours=6))):
        ca.ensure()
        bundle = ca.bundle()
        assert 1 <= len(bundle.x509_authorities) <= 3
        authorities |= set(bundle.x509_authorities)
        for cert in signed:
            if cert.not_valid_after_utc > clock.now:
                assert _verifies(cert, bundle, clock.now)
        key = ec.generate_private_key(ec.SECP256R1())
        signed.append(
            ca.sign_x509_svid(WORKLOAD, key.public_key(), clock.now + dt.timedelta(days=2))
        )
        clock.advance(hours=6)
    assert len(authorities) >= 5  # it did rotate


def test_an_active_authority_that_expired_unattended_is_replaced(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    (first,) = ca.bundle().x509_authorities
    clock.now = first.not_valid_after_utc + dt.timedelta(days=1)
    assert ca.ensure() is True
    (replacement,) = ca.bundle().x509_authorities
    assert replacement != first
    assert _verifies(_svid(ca, clock), ca.bundle(), clock.now)


def test_a_prepared_authority_is_activated_when_the_active_one_expired(
    ca: TrustDomainCA, clock: SettableClock
) -> None:
    (first,) = ca.bundle().x509_authorities
    clock.advance(days=1)
    ca.prepare_next()
    (second,) = [c for c in ca.bundle().x509_authorities if c != first]
    clock.now = first.not_valid_after_utc  # no ensure() ran at the activation point
    assert ca.ensure() is True
    assert second in ca.bundle().x509_authorities
    assert first not in ca.bundle().x509_authorities
    assert _svid(ca, clock).issuer == second.subject


def test_signing_runs_a_due_step_first(ca: TrustDomainCA, clock: SettableClock) -> None:
    """A node whose sweep has not run yet still never signs with an expired authority."""
    (first,) = ca.bundle().x509_authorities
    clock.now = first.not_valid_after_utc + dt.timedelta(seconds=1)
    cert = _svid(ca, clock)
    assert cert.issuer != first.subject
    assert _verifies(cert, ca.bundle(), clock.now)


# -- operator rotation --


def test_prepare_then_activate_by_hand(ca: TrustDomainCA, clock: SettableClock) -> None:
    (first,) = ca.bundle().x509_authorities
    sequence = ca.bundle().sequence
    ca.prepare_next()
    prepared = ca.bundle()
    assert len(prepared.x509_authorities) == 2 and prepared.sequence > sequence
    old = _svid(ca, clock, life=TTL)
    assert old.issuer == first.subject  # published, not signing

    ca.prepare_next()  # one is prepared already: nothing changes
    assert ca.bundle().sequence == prepared.sequence

    ca.activate_next()
    activated = ca.bundle()
    assert activated.sequence > prepared.sequence
    new = _svid(ca, clock)
    assert new.issuer != first.subject
    assert _verifies(old, activated, clock.now) and _verifies(new, activated, clock.now)
    assert _verifies(new, prepared, clock.now)
    assert first in activated.x509_authorities


def test_activating_with_nothing_prepared_is_refused(ca: TrustDomainCA) -> None:
    ca.ensure()
    sequence = ca.bundle().sequence
    with pytest.raises(SpiffeError, match="prepare"):
        ca.activate_next()
    assert ca.bundle().sequence == sequence


# -- sealed, no trust domain --


def test_sealed_the_ca_signs_and_publishes_nothing(
    ca: TrustDomainCA, share: tuple[Barrier, str], clock: SettableClock
) -> None:
    barrier, part = share
    ca.ensure()
    before = ca.bundle()
    barrier.seal()
    assert ca.ensure() is False
    for attempt in (
        ca.bundle,
        lambda: _svid(ca, clock),
        lambda: ca.sign_jwt_svid(WORKLOAD, ["a"], clock.now + dt.timedelta(minutes=5)),
        lambda: ca.validate_jwt_svid("x.y.z", "a"),
        lambda: ca.crl([]),
        ca.prepare_next,
        ca.activate_next,
    ):
        with pytest.raises(CaUnavailable):
            attempt()
    ca.forget()  # what sealing calls: the keys leave memory
    with pytest.raises(CaUnavailable):
        ca.bundle()

    barrier.submit_share(part)
    assert ca.ensure() is True  # loaded again after unseal
    after = ca.bundle()
    assert after.x509_authorities == before.x509_authorities
    assert after.sequence == before.sequence
    assert _verifies(_svid(ca, clock), before, clock.now)


def test_with_no_trust_domain_there_is_no_ca(store: Store, barrier: Barrier) -> None:
    domain: list[str | None] = [None]
    ca = TrustDomainCA(store, barrier, lambda: domain[0])
    assert ca.ensure() is False
    with pytest.raises(CaUnavailable, match="trust_domain"):
        ca.bundle()
    with pytest.raises(CaUnavailable):
        ca.prepare_next()
    domain[0] = "example.org"
    assert ca.ensure() is True
    assert ca.bundle().trust_domain == "example.org"


def test_a_new_trust_domain_gets_a_new_ca(store: Store, barrier: Barrier) -> None:
    domain = ["example.org"]
    ca = TrustDomainCA(store, barrier, lambda: domain[0])
    old = ca.bundle()
    domain[0] = "other.example"
    assert ca.ensure() is True
    new = ca.bundle()
    assert new.trust_domain == "other.example"
    assert new.sequence > old.sequence
    assert not set(new.x509_authorities) & set(old.x509_authorities)
    (cert,) = new.x509_authorities
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://other.example"]
    with pytest.raises(Exception, match="trust domain"):
        _svid(ca, SettableClock())  # example.org IDs are not this domain's any more


# -- persistence, other processes --


def test_a_restart_reloads_the_same_authorities(
    store: Store, barrier: Barrier, ca: TrustDomainCA, clock: SettableClock
) -> None:
    ca.prepare_next()
    before = ca.bundle()
    jwt_before = ca.sign_jwt_svid(WORKLOAD, ["a"], clock.now + dt.timedelta(minutes=5))
    restarted = TrustDomainCA(store, barrier, lambda: "example.org", clock, ca_ttl=TTL)
    assert restarted.ensure() is True
    after = restarted.bundle()
    assert after.x509_authorities == before.x509_authorities
    assert dict(after.jwt_authorities).keys() == dict(before.jwt_authorities).keys()
    assert after.sequence == before.sequence
    assert after.to_jwks() == before.to_jwks()
    # The same keys: what one signed, the other's bundle verifies, and the reverse.
    assert _verifies(_svid(restarted, clock), before, clock.now)
    assert restarted.validate_jwt_svid(jwt_before, "a")[0] == WORKLOAD
    assert _svid(restarted, clock).issuer == _svid(ca, clock).issuer


def test_another_process_sees_a_change_on_ensure(
    store: Store, barrier: Barrier, ca: TrustDomainCA, clock: SettableClock
) -> None:
    other = TrustDomainCA(store, barrier, lambda: "example.org", clock, ca_ttl=TTL)
    assert other.ensure() is True
    seen: list[Bundle] = []
    other.on_changed.append(seen.append)
    assert ca.ensure() is True  # first load here
    with store.read() as tx:
        head = tx.events_head()
    ca.prepare_next()
    with store.read() as tx:
        kinds = [e.kind for e in tx.events_after(head, 100)]
        head = tx.events_head()
    assert kinds == [SPIFFE_CA_CHANGED]  # what wakes the other processes
    assert other.ensure() is True
    with store.read() as tx:
        assert tx.events_head() == head  # loaded, not written again
    assert other.bundle().to_jwks() == ca.bundle().to_jwks()
    assert seen and seen[-1].sequence == ca.bundle().sequence
    assert other.ensure() is False
    ca.activate_next()
    assert other.ensure() is True
    assert _svid(other, clock).issuer == _svid(ca, clock).issuer


def test_concurrent_first_ensures_agree_on_one_authority(
    store: Store, barrier: Barrier, clock: SettableClock
) -> None:
    cas = [TrustDomainCA(store, barrier, lambda: "example.org", clock) for _ in range(4)]
    start = threading.Barrier(len(cas))
    errors: list[BaseException] = []

    def run(ca: TrustDomainCA) -> None:
        try:
            start.wait()
            ca.ensure()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ca,)) for ca in cas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for ca in cas:
        ca.ensure()
    bundles = [ca.bundle() for ca in cas]
    assert len(bundles[0].x509_authorities) == 1
    assert all(b.to_jwks() == bundles[0].to_jwks() for b in bundles)
    issuers = {_svid(ca, clock).issuer for ca in cas}
    assert len(issuers) == 1


def _persisted_bytes(store: Store) -> bytes:
    """Everything the store has written, as an attacker holding the database sees it."""
    engine = getattr(store, "engine", None)
    if engine is None:  # the memory store: what it would hand to any reader
        with store.read() as tx:
            meta = tx.get_meta("spiffe/authorities") or b""
            sealed = [tx.get_sealed(f"spiffe-ca/{rid}") for rid in _record_ids(meta)]
        return b"\x00".join([meta, *(r.ciphertext for r in sealed if r is not None)])
    return persisted_sql_bytes(engine)


def _record_ids(meta: bytes) -> Iterator[str]:
    for authority in json.loads(meta)["authorities"]:
        yield authority["id"]
        yield authority["jwt_kid"]


def test_private_keys_are_stored_only_sealed(
    store: Store, barrier: Barrier, ca: TrustDomainCA
) -> None:
    ca.prepare_next()
    bundle = ca.bundle()
    with store.read() as tx:
        meta = tx.get_meta("spiffe/authorities")
        assert meta is not None
        pems = {rid: barrier.get_secret(tx, f"spiffe-ca/{rid}") for rid in _record_ids(meta)}
    assert len(pems) == 4  # a CA key and a JWT key per authority
    publics = {c.public_key().public_numbers() for c in bundle.x509_authorities}  # type: ignore[union-attr]
    publics |= {k.public_numbers() for k in bundle.jwt_authorities.values()}
    data = _persisted_bytes(store)
    assert b"PRIVATE KEY" not in data
    for pem in pems.values():
        assert pem is not None
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key().public_numbers() in publics  # the real keys, read back
        body = b"".join(pem.strip().splitlines()[1:-1])
        der = base64.b64decode(body)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        for rendering in (body, body[:48], der, scalar, scalar.hex().encode()):
            assert rendering not in data


# -- revocation --


def test_the_crl_is_signed_by_the_active_authority(ca: TrustDomainCA, clock: SettableClock) -> None:
    (active,) = ca.bundle().x509_authorities
    revoked_at = clock.now - dt.timedelta(minutes=3)
    crl = ca.crl([(11, revoked_at), (12, clock.now), (11, revoked_at)])
    public = active.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public)
    assert crl.issuer == active.subject
    assert sorted(r.serial_number for r in crl) == [11, 12]
    entry = crl.get_revoked_certificate_by_serial_number(11)
    assert entry is not None
    assert entry.revocation_date_utc == revoked_at.replace(microsecond=0)
    assert crl.next_update_utc is not None and crl.next_update_utc > crl.last_update_utc
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = active.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    later = clock.advance(seconds=1)
    assert later
    newer = ca.crl([])
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert newer.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not crl.is_signature_valid(other)


def test_each_published_authority_has_a_crl(ca: TrustDomainCA, clock: SettableClock) -> None:
    ca.prepare_next()
    bundle = ca.bundle()
    crls = ca.crls([(5, clock.now)])
    assert len(crls) == 2
    for crl, cert in zip(
        sorted(crls, key=lambda c: c.issuer.rfc4514_string()),
        sorted(bundle.x509_authorities, key=lambda c: c.subject.rfc4514_string()),
        strict=True,
    ):
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert crl.issuer == cert.subject and crl.is_signature_valid(public)
        assert crl.get_revoked_certificate_by_serial_number(5) is not None
