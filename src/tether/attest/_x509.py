"""The X.509 attestor: a client certificate presented over mTLS in, verified Evidence out.

An estate issuer of `kind: x509` trusts a set of roots: a CA bundle (`ca:`, PEM), a
federated trust domain's SPIFFE bundle (`trust_domain:` + `spiffe_bundle:`), or, for the
estate's own trust domain with neither, Tether's own CA (so an X509-SVID Tether issued
attests its holder). The chain is verified by `cryptography`'s RFC 5280 path builder
(expiry, signatures, a chain to one of the issuer's roots, the client-auth profile), and
the leaf is held to what a client certificate must be before that: not a CA, a key usage
that allows signing (and not certificate signing), clientAuth when it names uses at all.

The TLS layer has already checked the chain against the union of every issuer's roots
(it must, to let the handshake through); this check is the one that decides, against the
issuer the certificate is evidence from, with the estate as it is now.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from tether._internal.timeutil import utcnow
from tether.attest._evidence import Evidence
from tether.attest.errors import AmbiguousIdentity, AttestationError
from tether.model import Issuer

#: A chain longer than this is refused before anything is parsed: no legitimate client
#: sends dozens of intermediates, and each costs a parse and a signature check.
MAX_CHAIN = 8

#: The selectors a rule may name for an x509 issuer (`attest: {issuer, claims: {...}}`).
X509_SELECTORS = (
    "spiffe_id",
    "trust_domain",
    "subject",
    "cn",
    "dns",
    "email",
    "uri",
    "serial",
    "sha256",
    "issuer_dn",
)


class X509IssuerInvalid(ValueError):
    """An x509 issuer's declared roots cannot be used; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _load_pem_roots(pem: str) -> tuple[x509.Certificate, ...]:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise X509IssuerInvalid("ca", "is not a list of PEM certificates") from None
    for cert in certs:
        if not _is_ca(cert):
            raise X509IssuerInvalid(
                "ca", f"holds a certificate that is not a CA ({cert.subject.rfc4514_string()})"
            )
    return tuple(certs)


def _bundle_roots(bundle: Mapping[str, Any]) -> tuple[x509.Certificate, ...]:
    """The X.509 authorities of a SPIFFE bundle: its `x509-svid` keys' one certificate."""
    roots = []
    for i, key in enumerate(bundle.get("keys", [])):
        if not isinstance(key, Mapping) or key.get("use") != "x509-svid":
            continue
        x5c = key.get("x5c")
        if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
            raise X509IssuerInvalid(
                f"spiffe_bundle.keys[{i}].x5c", "an x509-svid key holds exactly one certificate"
            )
        try:
            roots.append(x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True)))
        except ValueError:
            raise X509IssuerInvalid(
                f"spiffe_bundle.keys[{i}].x5c", "is not a base64 DER certificate"
            ) from None
    if not roots:
        raise X509IssuerInvalid("spiffe_bundle", "has no x509-svid key: it trusts nothing")
    return tuple(roots)


def x509_issuer_roots(issuer: Issuer) -> tuple[x509.Certificate, ...] | None:
    """The roots an x509 issuer declares; None when it means the estate's own CA."""
    if issuer.ca is not None:
        return _load_pem_roots(issuer.ca)
    if issuer.spiffe_bundle is not None:
        return _bundle_roots(issuer.spiffe_bundle)
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_leaf(leaf: x509.Certificate, now: dt.datetime) -> None:
    """What a client certificate must be, each refusal a sentence an operator can act on."""
    if now < leaf.not_valid_before_utc:
        raise AttestationError(
            f"the client certificate is not valid before {leaf.not_valid_before_utc.isoformat()}"
        )
    if now >= leaf.not_valid_after_utc:
        raise AttestationError(
            f"the client certificate expired at {leaf.not_valid_after_utc.isoformat()}"
        )
    if _is_ca(leaf):
        raise AttestationError(
            "the client certificate is a CA certificate (basicConstraints CA:TRUE), not a leaf"
        )
    usage = _extension(leaf, x509.KeyUsage)
    if usage is not None:
        if not usage.digital_signature:
            raise AttestationError("the client certificate's key usage lacks digitalSignature")
        if usage.key_cert_sign or usage.crl_sign:
            raise AttestationError(
                "the client certificate's key usage allows signing certificates or CRLs"
            )
    extended = _extension(leaf, x509.ExtendedKeyUsage)
    if extended is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in extended:
        raise AttestationError(
            "the client certificate's extended key usage does not include clientAuth"
        )


def _san(leaf: x509.Certificate) -> x509.SubjectAlternativeName | None:
    value = _extension(leaf, x509.SubjectAlternativeName)
    return value if isinstance(value, x509.SubjectAlternativeName) else None


def certificate_selectors(leaf: x509.Certificate) -> dict[str, str]:
    """What a rule may match on (X509_SELECTORS), as strings like a token's selectors."""
    out = {
        "subject": leaf.subject.rfc4514_string(),
        "issuer_dn": leaf.issuer.rfc4514_string(),
        "serial": format(leaf.serial_number, "x"),
        "sha256": hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }
    common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common) == 1 and isinstance(common[0].value, str):
        out["cn"] = common[0].value
    san = _san(leaf)
    if san is not None:
        for name, kind in (("dns", x509.DNSName), ("email", x509.RFC822Name)):
            values = sorted(str(v) for v in san.get_values_for_type(kind))
            if values:
                out[name] = ",".join(values)
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            out["uri"] = ",".join(sorted(uris))
        spiffe = [u for u in uris if u.lower().startswith("spiffe://")]
        if len(spiffe) == 1 and len(uris) == 1:
            out["spiffe_id"] = spiffe[0]
            out["trust_domain"] = spiffe[0][len("spiffe://") :].split("/", 1)[0]
    return out


#: The Web PKI profile for the leaf, except that a subjectAltName is not required: an
#: enterprise CA's client certificates may name their holder in the subject alone.
_LEAF_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


def _verifier(roots: Sequence[x509.Certificate], now: dt.datetime) -> Any:
    return (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(now)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(ee_policy=_LEAF_POLICY, ca_policy=ExtensionPolicy.webpki_defaults_ca())
        .build_client_verifier()
    )


@dataclass(frozen=True, slots=True)
class _Trusted:
    issuer: Issuer
    #: None: the estate's own trust domain, whose roots are Tether's CA (read per call).
    roots: tuple[x509.Certificate, ...] | None


#: What the estate's own trust domain is and its CA's current authorities.
OwnAuthorities = Callable[[], tuple[str | None, Sequence[x509.Certificate]]]


class X509Attestor:
    """Verifies client certificate chains against the estate's x509 issuers.

    Thread-safe; the parsed roots are kept until `invalidate()` (the estate changed).
    `revoked(serial)` says whether an X509-SVID of the estate's own trust domain was
    revoked before its end (the CRL's list)."""

    def __init__(
        self,
        issuers: Callable[[], Sequence[Issuer]],
        own: OwnAuthorities,
        revoked: Callable[[int], bool],
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._issuers = issuers
        self._own = own
        self._revoked = revoked
        self._clock = clock
        self._lock = threading.Lock()
        self._registry: tuple[_Trusted, ...] | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._registry = None

    def _trusted(self) -> tuple[_Trusted, ...]:
        registry = self._registry
        if registry is None:
            with self._lock:
                registry = self._registry
                if registry is None:
                    registry = self._build()
                    self._registry = registry
        return registry

    def _build(self) -> tuple[_Trusted, ...]:
        out = []
        for issuer in self._issuers():
            if not issuer.is_x509:
                continue
            try:
                roots = x509_issuer_roots(issuer)
            except X509IssuerInvalid:
                continue  # the estate parser refuses these; an old stored spec trusts nothing
            out.append(_Trusted(issuer, roots))
        return tuple(out)

    def _roots(self, trusted: _Trusted) -> Sequence[x509.Certificate]:
        if trusted.roots is not None:
            return trusted.roots
        own_domain, authorities = self._own()
        return authorities if own_domain == trusted.issuer.trust_domain else ()

    @property
    def configured(self) -> bool:
        """Whether any x509 issuer is declared: the TLS layer asks for certificates then."""
        return bool(self._trusted())

    def roots_pem(self) -> str:
        """Every root any x509 issuer trusts, PEM: what the TLS handshake must accept."""
        seen: dict[bytes, str] = {}
        for trusted in self._trusted():
            for cert in self._roots(trusted):
                der = cert.public_bytes(serialization.Encoding.DER)
                seen.setdefault(der, cert.public_bytes(serialization.Encoding.PEM).decode())
        return "".join(seen.values())

    def verify(self, chain: Sequence[bytes]) -> Evidence:
        """Verify a chain (DER, leaf first) and return its evidence, or say why not."""
        if not chain:
            raise AttestationError("no client certificate was presented")
        if len(chain) > MAX_CHAIN:
            raise AttestationError(f"the client sent more than {MAX_CHAIN} certificates")
        try:
            leaf, *intermediates = [x509.load_der_x509_certificate(der) for der in chain]
        except ValueError:
            raise AttestationError("the client certificate cannot be parsed") from None
        now = self._clock()
        _check_leaf(leaf, now)
        selectors = certificate_selectors(leaf)
        matches: list[Issuer] = []
        refusals: list[str] = []
        for trusted in self._trusted():
            roots = self._roots(trusted)
            if not roots:
                continue
            try:
                _verifier(roots, now).verify(leaf, intermediates)
            except VerificationError:
                continue
            problem = self._svid_problem(trusted.issuer, leaf, selectors)
            if problem is None:
                matches.append(trusted.issuer)
            else:
                refusals.append(problem)
        if not matches:
            if refusals:
                raise AttestationError(refusals[0])
            raise AttestationError(
                "the client certificate does not chain to the roots of any trusted x509 issuer"
            )
        if len(matches) > 1:
            names = ", ".join(sorted(i.id for i in matches))
            raise AmbiguousIdentity(f"the client certificate chains to several issuers: {names}")
        issuer = matches[0]
        return Evidence(
            issuer_id=issuer.id,
            issuer=issuer.issuer,
            subject=selectors.get("spiffe_id", selectors["subject"]),
            claims=MappingProxyType(dict(selectors)),
            selectors=MappingProxyType(selectors),
            issued_at=leaf.not_valid_before_utc,
            expires_at=leaf.not_valid_after_utc,
            jti=None,
        )

    def _svid_problem(
        self, issuer: Issuer, leaf: x509.Certificate, selectors: Mapping[str, str]
    ) -> str | None:
        """Why a certificate that chains to a SPIFFE issuer's roots is still not its SVID."""
        if issuer.trust_domain is None:
            return None
        if "spiffe_id" not in selectors:
            return (
                f"the client certificate is not an X509-SVID (one spiffe:// URI SAN), which "
                f"issuer {issuer.id} requires"
            )
        if selectors["trust_domain"] != issuer.trust_domain:
            return (
                f"the X509-SVID's SPIFFE ID is in trust domain {selectors['trust_domain']!r}, "
                f"not {issuer.trust_domain!r}"
            )
        own_domain, _ = self._own()
        own = issuer.ca is None and issuer.spiffe_bundle is None
        if own and own_domain == issuer.trust_domain and self._revoked(leaf.serial_number):
            return "the X509-SVID was revoked"
        return None
