"""The X.509 attestor: client certificate chains against the estate's x509 issuers, with
the PKI (an enterprise CA with an intermediate, a federated trust domain, Tether's own CA)
made at test time."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.clock import SettableClock
from tether.attest import AmbiguousIdentity, AttestationError, X509Attestor, match_identity
from tether.model import Identity, Issuer, Kind


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    now: dt.datetime

    @classmethod
    def root(cls, cn: str, now: dt.datetime) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, _ca_cert(_name(cn), key.public_key(), _name(cn), key, now), now)

    def intermediate(self, cn: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        return Authority(
            key,
            _ca_cert(_name(cn), key.public_key(), self.cert.subject, self.key, self.now),
            self.now,
        )

    def leaf(
        self,
        *,
        cn: str = "app",
        uris: Sequence[str] = (),
        ca_flag: bool = False,
        lifetime: tuple[dt.timedelta, dt.timedelta] = (
            dt.timedelta(minutes=-5),
            dt.timedelta(hours=1),
        ),
        key_cert_sign: bool = False,
        serial: int | None = None,
    ) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(self.now + lifetime[0])
            .not_valid_after(self.now + lifetime[1])
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=key_cert_sign, signing=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if uris:
            names = [x509.UniformResourceIdentifier(u) for u in uris]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _usage(*, cert_sign: bool, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_cert(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=True, signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )


def _bundle(authority: Authority) -> dict[str, object]:
    return {
        "keys": [
            {
                "use": "x509-svid",
                "kty": "EC",
                "crv": "P-256",
                "x5c": [base64.b64encode(authority.der).decode()],
            }
        ]
    }


@dataclass
class World:
    clock: SettableClock
    corp: Authority
    partner: Authority
    own: Authority
    revoked: set[int] = field(default_factory=set)
    issuers: list[Issuer] = field(default_factory=list)

    def attestor(self) -> X509Attestor:
        return X509Attestor(
            lambda: self.issuers,
            lambda: ("example.org", [self.own.cert]),
            lambda serial: serial in self.revoked,
            clock=self.clock,
        )


@pytest.fixture
def world() -> World:
    clock = SettableClock()
    world = World(
        clock=clock,
        corp=Authority.root("corp root", clock.now),
        partner=Authority.root("partner root", clock.now),
        own=Authority.root("example.org", clock.now),
    )
    world.issuers = [
        Issuer.from_spec({"id": "corp", "kind": "x509", "ca": world.corp.pem}),
        Issuer.from_spec(
            {
                "id": "partner",
                "kind": "x509",
                "trust_domain": "partner.example",
                "spiffe_bundle": _bundle(world.partner),
            }
        ),
        Issuer.from_spec({"id": "own", "kind": "x509", "trust_domain": "example.org"}),
        Issuer.from_spec({"id": "gh", "issuer": "https://gh.example", "audiences": ["t"]}),
    ]
    return world


def test_a_certificate_of_the_corporate_ca_through_an_intermediate(world: World) -> None:
    intermediate = world.corp.intermediate("corp issuing")
    leaf = intermediate.leaf(cn="billing", uris=["spiffe://example.org/prod/billing"])
    evidence = world.attestor().verify([leaf, intermediate.der])
    assert evidence.issuer_id == "corp"
    assert evidence.subject == "spiffe://example.org/prod/billing"
    assert evidence.selectors["cn"] == "billing"
    assert evidence.selectors["trust_domain"] == "example.org"
    # Without the intermediate the leaf does not chain to the root.
    with pytest.raises(AttestationError, match="does not chain"):
        world.attestor().verify([leaf])


def test_rules_match_certificate_selectors_with_globs(world: World) -> None:
    evidence = world.attestor().verify([world.corp.leaf(uris=["spiffe://example.org/prod/a"])])
    identity = Identity.from_spec(
        {
            "id": "a",
            "kind": Kind.WORKLOAD.value,
            "owner": "o",
            "purpose": "p",
            "justification": "j",
            "environment": "prod",
            "attest": {"issuer": "corp", "claims": {"spiffe_id": "spiffe://example.org/prod/*"}},
        }
    )
    assert match_identity(evidence, [identity]) is identity


def test_a_federated_trust_domain_accepts_only_its_own_svids(world: World) -> None:
    good = world.partner.leaf(uris=["spiffe://partner.example/payments"])
    assert world.attestor().verify([good]).issuer_id == "partner"
    other_domain = world.partner.leaf(uris=["spiffe://example.org/payments"])
    with pytest.raises(AttestationError, match=r"trust domain 'example\.org', not 'partner"):
        world.attestor().verify([other_domain])
    not_an_svid = world.partner.leaf(cn="payments")
    with pytest.raises(AttestationError, match="not an X509-SVID"):
        world.attestor().verify([not_an_svid])
    two_uris = world.partner.leaf(uris=["spiffe://partner.example/a", "spiffe://partner.example/b"])
    with pytest.raises(AttestationError, match="not an X509-SVID"):
        world.attestor().verify([two_uris])


def test_the_own_trust_domain_trusts_tethers_ca_and_its_revocations(world: World) -> None:
    serial = 0x5EED
    svid = world.own.leaf(uris=["spiffe://example.org/prod/svc"], serial=serial)
    assert world.attestor().verify([svid]).issuer_id == "own"
    world.revoked.add(serial)
    with pytest.raises(AttestationError, match="was revoked"):
        world.attestor().verify([svid])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda a: a.leaf(lifetime=(dt.timedelta(hours=-2), dt.timedelta(hours=-1))), "expired"),
        (
            lambda a: a.leaf(lifetime=(dt.timedelta(hours=1), dt.timedelta(hours=2))),
            "not valid before",
        ),
        (lambda a: a.leaf(ca_flag=True), "is a CA certificate"),
        (lambda a: a.leaf(key_cert_sign=True), "signing certificates"),
    ],
    ids=["expired", "not-yet-valid", "ca-flag", "cert-sign"],
)
def test_what_a_client_certificate_must_be(world: World, make: object, reason: str) -> None:
    leaf = make(world.corp)  # type: ignore[operator]
    with pytest.raises(AttestationError, match=reason):
        world.attestor().verify([leaf])


def test_a_root_no_issuer_trusts_and_rubbish_are_refused(world: World) -> None:
    stranger = Authority.root("stranger", world.clock.now)
    with pytest.raises(AttestationError, match="does not chain to the roots"):
        world.attestor().verify([stranger.leaf()])
    with pytest.raises(AttestationError, match="cannot be parsed"):
        world.attestor().verify([b"not a certificate"])
    with pytest.raises(AttestationError, match="no client certificate"):
        world.attestor().verify([])
    with pytest.raises(AttestationError, match="more than 8"):
        world.attestor().verify([stranger.der] * 9)


def test_two_issuers_trusting_one_root_are_ambiguous(world: World) -> None:
    world.issuers.append(
        Issuer.from_spec({"id": "corp-again", "kind": "x509", "ca": world.corp.pem})
    )
    with pytest.raises(AmbiguousIdentity, match="corp, corp-again"):
        world.attestor().verify([world.corp.leaf()])


def test_the_estate_changing_is_seen_after_invalidate(world: World) -> None:
    attestor = world.attestor()
    leaf = world.corp.leaf()
    assert attestor.verify([leaf]).issuer_id == "corp"
    world.issuers = [i for i in world.issuers if i.id != "corp"]
    assert attestor.verify([leaf]).issuer_id == "corp"  # cached until told
    attestor.invalidate()
    with pytest.raises(AttestationError, match="does not chain"):
        attestor.verify([leaf])


def test_the_tls_layer_is_given_every_root(world: World) -> None:
    roots = x509.load_pem_x509_certificates(world.attestor().roots_pem().encode())
    assert {c.subject for c in roots} == {
        world.corp.cert.subject,
        world.partner.cert.subject,
        world.own.cert.subject,
    }
