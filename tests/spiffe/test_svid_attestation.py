"""An X509-SVID Tether issued attests its holder to the HTTP side (an x509 issuer of the
estate's own trust domain), on every storage backend: the SVID starts a task, and once its
lease is revoked it no longer does."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.app import Tether
from tether.attest import LocalCaller
from tether.estate import parse_estate
from tether.issuance import InvalidGrant
from tether.lease import RevokeTarget

TD = "example.org"


def _estate() -> dict[str, Any]:
    base = {
        "kind": "workload",
        "owner": "ops",
        "purpose": "serves the storefront",
        "justification": "OPS-7",
        "environment": "prod",
    }
    return {
        "version": 1,
        "trust_domain": TD,
        "owners": [{"id": "ops", "contact": "ops@example.com"}],
        "issuers": [{"id": "own-svids", "kind": "x509", "trust_domain": TD}],
        "profiles": [{"id": "svid", "provider": "x509-svid", "max_ttl": "1h"}],
        "identities": [
            {
                **base,
                "id": "web",
                "attest": {"unix": {"uid": os.getuid()}},
                "entitlements": [{"profile": "svid"}],
            },
            {
                **base,
                "id": "web-http",
                "attest": {
                    "issuer": "own-svids",
                    "claims": {"spiffe_id": f"spiffe://{TD}/prod/web"},
                },
            },
        ],
    }


def _svid(node: Tether) -> tuple[str, bytes]:
    caller = LocalCaller(os.getpid(), os.getuid(), os.getgid(), os.path.realpath(sys.executable))
    subject = node.issuance.local_subject(caller)
    profile = node.view.current.profiles["svid"]
    result, credential = node.issuance.issue_local(subject, profile)
    cert = x509.load_pem_x509_certificate(str(credential.extra["certificate"]).encode())
    return result.lease_id, cert.public_bytes(serialization.Encoding.DER)


def test_an_svid_of_the_own_trust_domain_attests_until_it_is_revoked(node: Tether) -> None:
    document = _estate()
    node.estate.apply(parse_estate(document), actor="test", document=document)
    lease_id, der = _svid(node)

    started = node.issuance.start_task(None, "deploy", _ttl(), None, [der])
    assert started.task.identity_id == "web-http"
    assert started.task.issuer_id == "own-svids"

    node.leases.revoke(RevokeTarget(lease_id=lease_id), "compromised", "admin")
    with pytest.raises(InvalidGrant, match="the X509-SVID was revoked"):
        node.issuance.start_task(None, "deploy-again", _ttl(), None, [der])
    # And the published CRL lists it for relying parties that check.
    crls = node.spiffe_ca.crls(node.revoked_svids.serials().items())
    serial = x509.load_der_x509_certificate(der).serial_number
    assert all(crl.get_revoked_certificate_by_serial_number(serial) for crl in crls)


def _ttl() -> dt.timedelta:
    return dt.timedelta(minutes=10)
