"""Attestation by X.509 client certificate: `tether serve` over HTTPS, an estate issuer of
kind x509, and workloads that present certificates to `POST /v1/tasks` and `/oauth2/token`.

The PKI is made at test time; the server is the real CLI; the client is plain httpx
presenting its certificate in the TLS handshake.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cli.test_tls import Ca, Issued
from tests.factories import write_estate
from tests.scenario.harness import Server

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
BILLING = "spiffe://example.org/prod/billing"


@dataclass(frozen=True)
class Leaf:
    spiffe_id: str | None = None
    cn: str = "workload"
    ca_flag: bool = False
    expired: bool = False
    eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,)
    stranger: bool = False  # signed by a CA no issuer trusts


def _issue(ca: Ca, directory: Path, name: str, leaf: Leaf) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (
        (now - dt.timedelta(days=2), now - dt.timedelta(days=1))
        if leaf.expired
        else (now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf.cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=leaf.ca_flag, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage(list(leaf.eku)), critical=False)
    )
    if leaf.spiffe_id is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(leaf.spiffe_id)]),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    issued = Issued(directory / f"{name}.crt", directory / f"{name}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return issued


@dataclass
class Setup:
    server: Server
    server_ca: Ca
    client_ca: Ca
    stranger_ca: Ca
    directory: Path

    def client(self, issued: Issued | None) -> httpx.Client:
        context = ssl.create_default_context(cafile=self.server_ca.path)
        if issued is not None:
            context.load_cert_chain(issued.cert, issued.key)
        return httpx.Client(base_url=self.server.addr, verify=context, timeout=10)

    def issue(self, name: str, leaf: Leaf, ca: Ca | None = None) -> Issued:
        return _issue(ca or self.client_ca, self.directory, name, leaf)


def _estate(client_ca: Ca) -> dict[str, Any]:
    pem = client_ca.cert.public_bytes(serialization.Encoding.PEM).decode()
    return {
        "version": 1,
        "trust_domain": "example.org",
        "owners": [{"id": "team-billing", "contact": "billing@example.com"}],
        "issuers": [{"id": "corp-pki", "kind": "x509", "ca": pem}],
        "profiles": [
            {
                "id": "ledger-read",
                "provider": "jwt",
                "audience": "https://ledger.example.com",
                "scopes": ["ledger:read"],
                "max_ttl": "15m",
            }
        ],
        "identities": [
            {
                "id": "billing",
                "kind": "workload",
                "owner": "team-billing",
                "purpose": "bills customers",
                "justification": "billing runs nightly",
                "environment": "prod",
                "attest": {"issuer": "corp-pki", "claims": {"spiffe_id": BILLING}},
                "entitlements": [{"profile": "ledger-read"}],
            },
            {
                "id": "reporter",
                "kind": "workload",
                "owner": "team-billing",
                "purpose": "reports",
                "justification": "monthly reports",
                "environment": "prod",
                "attest": {"issuer": "corp-pki", "claims": {"cn": "reporter"}},
                "entitlements": [{"profile": "ledger-read"}],
            },
        ],
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("mtls")
    server_ca = Ca.create(directory, "server-ca")
    client_ca = Ca.create(directory, "client-ca")
    stranger_ca = Ca.create(directory, "stranger-ca")
    server_cert = server_ca.issue(directory, "tether", server=True)
    server = Server(home=directory / "home", cacert=server_ca.path)
    server.start("--tls-cert", str(server_cert.cert), "--tls-key", str(server_cert.key))
    try:
        init = server.cli("init", "--shares", "1", "--threshold", "1", "--json")
        assert init.code == 0, init.stderr
        server.token = init.json()["root_token"]
        assert server.cli("unseal", init.json()["shares"][0]).code == 0
        estate = write_estate(directory / "estate.yaml", _estate(client_ca))
        applied = server.cli("apply", "-f", str(estate))
        assert applied.code == 0, applied.stderr
        yield Setup(server, server_ca, client_ca, stranger_ca, directory)
    finally:
        server.stop()


def _audit(setup: Setup, action: str) -> list[dict[str, Any]]:
    exported = setup.server.cli("audit", "export")
    assert exported.code == 0, exported.stderr
    entries = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    chosen = [e for e in entries if e["action"] == action]
    for entry in chosen:  # exported as the chain hashed them: details is JSON text
        if isinstance(entry["details"], str):
            entry["details"] = json.loads(entry["details"])
    return chosen


def test_a_client_certificate_attests_a_task_and_an_exchange(setup: Setup) -> None:
    issued = setup.issue("billing", Leaf(spiffe_id=BILLING))
    with setup.client(issued) as client:
        started = client.post("/v1/tasks", json={"name": "nightly", "ttl": "10m"})
        assert started.status_code == 201, started.text
        task = started.json()
        assert task["identity"] == "billing"

        # The task token exchanges as ever; and the certificate alone is a subject too.
        by_task = client.post(
            "/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": task["token"],
                "subject_token_type": task["token_type"],
                "audience": "https://ledger.example.com",
            },
        )
        assert by_task.status_code == 200, by_task.text
        by_cert = client.post(
            "/oauth2/token",
            data={"grant_type": EXCHANGE, "audience": "https://ledger.example.com"},
        )
        assert by_cert.status_code == 200, by_cert.text
        assert by_cert.json()["scope"] == "ledger:read"

    starts = [e for e in _audit(setup, "task.start") if e["identity_id"] == "billing"]
    assert starts and starts[-1]["details"]["via"] == "x509"
    assert starts[-1]["details"]["issuer"] == "corp-pki"
    issues = [e for e in _audit(setup, "token.exchange") if e["identity_id"] == "billing"]
    by_certificate = [e for e in issues if e["details"]["via"] == "x509"]
    assert by_certificate, issues
    assert by_certificate[-1]["details"]["selectors"]["spiffe_id"] == BILLING


def test_a_subject_named_certificate_attests_by_its_common_name(setup: Setup) -> None:
    issued = setup.issue("reporter", Leaf(cn="reporter"))
    with setup.client(issued) as client:
        started = client.post("/v1/tasks", json={"name": "monthly", "ttl": "10m"})
    assert started.status_code == 201, started.text
    assert started.json()["identity"] == "reporter"


def _refusal(setup: Setup, issued: Issued) -> str:
    with setup.client(issued) as client:
        answer = client.post("/v1/tasks", json={"name": "nope", "ttl": "10m"})
    assert answer.status_code in (400, 401), answer.text
    body = answer.json()
    return str(body.get("error_description") or body.get("detail") or body)


@pytest.mark.parametrize(
    ("leaf", "reason"),
    [
        (Leaf(spiffe_id=BILLING, expired=True), "expired at"),
        (Leaf(spiffe_id=BILLING, ca_flag=True), "is a CA certificate"),
        (Leaf(spiffe_id="spiffe://example.org/prod/intruder"), "no active identity"),
    ],
    ids=["expired", "ca-flagged", "wrong-spiffe-id"],
)
def test_a_certificate_that_is_not_good_evidence_is_refused_with_its_reason(
    setup: Setup, leaf: Leaf, reason: str
) -> None:
    issued = setup.issue(f"bad-{abs(hash(leaf))}", leaf)
    message = _refusal(setup, issued)
    assert reason in message, message
    assert "attestation refused" in message


@pytest.mark.parametrize(
    "leaf",
    [
        Leaf(spiffe_id=BILLING, stranger=True),
        Leaf(spiffe_id=BILLING, eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
    ],
    ids=["wrong-root", "server-auth-only"],
)
def test_a_certificate_the_handshake_refuses_gets_no_answer_at_all(
    setup: Setup, leaf: Leaf
) -> None:
    """A root no issuer trusts, or a certificate not for client authentication: TLS itself
    refuses it (with TLS 1.3 the client sees the connection closed), and nothing starts."""
    ca = setup.stranger_ca if leaf.stranger else None
    issued = setup.issue(f"refused-{abs(hash(leaf))}", leaf, ca=ca)
    with setup.client(issued) as client, pytest.raises(httpx.TransportError):
        client.post("/v1/tasks", json={"name": "refused", "ttl": "10m"})
    assert not [e for e in _audit(setup, "task.start") if e["details"]["name"] == "refused"]


def test_without_a_certificate_or_a_bearer_the_answer_says_what_to_send(setup: Setup) -> None:
    with setup.client(None) as client:
        answer = client.post("/v1/tasks", json={"name": "nope", "ttl": "10m"})
        health = client.get("/v1/sys/health")
    assert answer.status_code == 401
    assert "client certificate" in answer.text
    assert health.status_code == 200  # a client without a certificate is still served
