"""Attestation: proving what a workload is before anything is minted for it.

`Attestor.verify` checks an OIDC/JWT bearer token from one of the estate's trusted
issuers (GitHub Actions, Kubernetes service accounts, any OIDC issuer with a JWKS) and
returns `Evidence`: the verified claims plus string selectors normalized by the issuer's
preset. `match_identity` maps evidence to the one active identity whose registration
rule (`attest: {issuer, claims}`) it satisfies; `match_local` does the same for a local
caller the kernel vouches for (`attest: {unix: {uid, ...}}`). `X509Attestor.verify` checks
a client certificate chain presented over mTLS against the estate's `kind: x509` issuers
and returns Evidence that the same registration rules match.
"""

from tether.attest._attestor import Attestor, AttestorLimits
from tether.attest._evidence import GITHUB_ACTIONS_SELECTORS, Evidence, selector_value
from tether.attest._jti import JtiStore, MemoryJtiStore, StoreJtiStore
from tether.attest._local import LocalCaller, local_rule_matches, match_local
from tether.attest._rules import match_identity, rule_matches
from tether.attest._x509 import (
    X509_SELECTORS,
    X509Attestor,
    X509IssuerInvalid,
    x509_issuer_roots,
)
from tether.attest.errors import (
    AmbiguousIdentity,
    AttestationError,
    IssuerUnavailable,
    NoMatchingIdentity,
    ReplayedToken,
)

__all__ = [
    "GITHUB_ACTIONS_SELECTORS",
    "X509_SELECTORS",
    "AmbiguousIdentity",
    "AttestationError",
    "Attestor",
    "AttestorLimits",
    "Evidence",
    "IssuerUnavailable",
    "JtiStore",
    "LocalCaller",
    "MemoryJtiStore",
    "NoMatchingIdentity",
    "ReplayedToken",
    "StoreJtiStore",
    "X509Attestor",
    "X509IssuerInvalid",
    "local_rule_matches",
    "match_identity",
    "match_local",
    "rule_matches",
    "selector_value",
    "x509_issuer_roots",
]
