"""HTTPS for `tether serve`: real processes, real certificates, the CLI and the SDK verifying.

A CA, a server certificate for 127.0.0.1 and localhost, and client certificates are made
at test time; nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cli.test_core_cli import _estate
from tests.cli.test_errors import _tether
from tests.factories import write_estate
from tests.scenario.harness import Server
from tether.cli._server import is_loopback
from tether.client import ClientError, TetherClient, WorkloadClient

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


# -- a throwaway PKI --
@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    @property
    def pair(self) -> tuple[Path, Path]:
        return self.cert, self.key


@dataclass(frozen=True)
class Ca:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(name, key, cert, path)

    def issue(self, directory: Path, name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
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


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Pki:
    ca: Ca
    server: Issued
    client_ca: Ca
    client: Issued
    stranger: Issued  # a client certificate from a CA the server does not trust

    def serve_flags(self) -> tuple[str, ...]:
        return ("--tls-cert", str(self.server.cert), "--tls-key", str(self.server.key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Ca.create(directory, "server-ca")
    client_ca = Ca.create(directory, "client-ca")
    other_ca = Ca.create(directory, "other-ca")
    return Pki(
        ca=ca,
        server=ca.issue(directory, "tether", server=True),
        client_ca=client_ca,
        client=client_ca.issue(directory, "workload", server=False),
        stranger=other_ca.issue(directory, "stranger", server=False),
    )


@pytest.fixture
def https(pki: Pki, tmp_path: Path) -> Iterator[Server]:
    """An initialized, unsealed node serving HTTPS; `server.token` is the root token."""
    server = Server(home=tmp_path / "home", cacert=pki.ca.path)
    server.start(*pki.serve_flags())
    try:
        init = server.cli("init", "--shares", "1", "--threshold", "1", "--json")
        assert init.code == 0, init.stderr
        server.token = init.json()["root_token"]
        assert server.cli("unseal", init.json()["shares"][0]).code == 0
        yield server
    finally:
        server.stop()


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().count("\n") == 0, stderr
    return stderr


def _refused(server: Server, *flags: str) -> str:
    """`tether serve` with these flags exits at once with one line; that line."""
    done = _tether(
        "serve", "--listen", f"{server.listen_host}:{server.port}", *flags, env=server.env()
    )
    assert done.returncode == 1, done.stderr
    assert not server.home.joinpath("tether.db").exists()  # refused before touching storage
    return _one_line_error(done.stderr)


# -- (a), (b), (d): the CLI over HTTPS --
def test_cli_verifies_the_server_against_tether_cacert(https: Server) -> None:
    status = https.cli("status", "--json")
    assert status.code == 0, status.stderr
    assert status.json()["sealed"] is False

    env = https.env()
    del env["TETHER_CACERT"]  # only the system trust store, which knows nothing of this CA
    done = _tether("status", env=env)
    assert done.returncode == 1
    message = _one_line_error(done.stderr)
    assert f"TLS verification of {https.addr} failed" in message
    assert "TETHER_CACERT" in message

    env["TETHER_CACERT"] = str(https.home / "missing.pem")
    done = _tether("status", env=env)
    assert done.returncode == 1 and "missing.pem" in _one_line_error(done.stderr)


def test_plain_http_to_the_tls_port_fails(https: Server) -> None:
    plain = f"http://127.0.0.1:{https.port}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/v1/sys/health", timeout=5)
    done = _tether("status", env={**https.env(), "TETHER_ADDR": plain})
    assert done.returncode == 1
    assert "https://" in _one_line_error(done.stderr)


def test_the_issuer_is_the_https_address(https: Server) -> None:
    discovery = httpx.get(
        f"{https.addr}/.well-known/openid-configuration", verify=https.verify()
    ).json()
    assert discovery["issuer"].startswith("https://")


# -- (c): the core loop over HTTPS --
def test_token_exchange_over_https(
    https: Server, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = https.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", _estate())))
    assert applied.code == 0, applied.stderr
    join = https.cli("join-token", "create", "--identity", "batch-host", "--json").json()

    with WorkloadClient(addr=https.addr, attestation=join["token"], cacert=pki.ca.path) as sdk:
        task = sdk.start_task("nightly", ttl="10m")
        issued = sdk.exchange(task.task_token, audience="push")
        assert issued.scope == ("push",)
        assert sdk.introspect(issued.access_token, auth_token=str(https.token))["active"]
        task.end()
        assert not sdk.introspect(issued.access_token, auth_token=str(https.token))["active"]

    # The same exchange with plain httpx verifying against the CA, and TETHER_CACERT for the SDK.
    join = https.cli("join-token", "create", "--identity", "batch-host", "--json").json()
    monkeypatch.setenv("TETHER_CACERT", str(pki.ca.path))
    with WorkloadClient(addr=https.addr, attestation=join["token"]) as sdk:
        task = sdk.start_task("nightly-2", ttl="10m")
        token = httpx.post(
            f"{https.addr}/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": task.task_token,
                "subject_token_type": ACCESS,
                "audience": "push",
            },
            verify=https.verify(),
        )
        assert token.status_code == 200, token.text
        introspected = httpx.post(
            f"{https.addr}/oauth2/introspect",
            data={"token": token.json()["access_token"]},
            headers={"authorization": f"Bearer {https.token}"},
            verify=https.verify(),
        ).json()
        assert introspected["active"] is True
        assert introspected["tether_lease"] == token.json()["tether_lease"]
        assert introspected["iss"].startswith("https://")
        task.end()


# -- (f): client certificates --
def _refused_handshake(server: Server, pki: Pki, client: Issued | None) -> str:
    """A request with this client certificate (or none) fails in TLS; the client's message."""
    with (
        TetherClient(
            server.addr,
            cacert=pki.ca.path,
            client_cert=client.cert if client else "",
            client_key=client.key if client else "",
        ) as api,
        pytest.raises(ClientError, match=r"TLS connection to .* failed") as caught,
    ):
        api.get("/v1/sys/health")
    return str(caught.value)


def test_client_certificates_are_required_with_a_client_ca(pki: Pki, tmp_path: Path) -> None:
    server = Server(home=tmp_path / "home", cacert=pki.ca.path, client_cert=pki.client.pair)
    server.start(*pki.serve_flags(), "--tls-client-ca", str(pki.client_ca.path))
    try:
        with TetherClient(
            server.addr, cacert=pki.ca.path, client_cert=pki.client.cert, client_key=pki.client.key
        ) as api:
            assert api.get("/v1/sys/health") is not None
        assert server.cli("status").code == 0  # TETHER_CLIENT_CERT / TETHER_CLIENT_KEY

        assert "TETHER_CLIENT_CERT" in _refused_handshake(server, pki, None)
        _refused_handshake(server, pki, pki.stranger)

        env = server.env()
        del env["TETHER_CLIENT_CERT"], env["TETHER_CLIENT_KEY"]
        done = _tether("status", env=env)
        assert done.returncode == 1
        assert "TETHER_CLIENT_CERT" in _one_line_error(done.stderr)
    finally:
        server.stop()


def test_optional_client_auth_serves_clients_without_a_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    server = Server(home=tmp_path / "home", cacert=pki.ca.path)
    server.start(
        *pki.serve_flags(),
        *("--tls-client-ca", str(pki.client_ca.path), "--tls-client-auth", "optional"),
    )
    try:
        with TetherClient(server.addr, cacert=pki.ca.path, client_cert="") as api:
            assert api.get("/v1/sys/health") is not None
        _refused_handshake(server, pki, pki.stranger)  # presented, so it must verify
    finally:
        server.stop()


# -- (e): plain HTTP only on loopback --
def test_plain_http_off_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    server = Server(home=tmp_path / "home", listen_host="0.0.0.0")
    message = _refused(server)
    assert "refusing to serve plain HTTP on 0.0.0.0" in message
    assert "--tls-cert" in message and "--allow-plain-http" in message

    server.start("--allow-plain-http")
    try:
        assert httpx.get(f"{server.addr}/v1/sys/health", timeout=5).status_code == 200
    finally:
        server.stop()

    server.extra_env = {"TETHER_ALLOW_PLAIN_HTTP": "1"}
    server.start()
    server.stop()


# -- (g) and the rest of the validation: one line, naming the option or file --
def test_bad_flags_are_one_clear_line(pki: Pki, tmp_path: Path) -> None:
    server = Server(home=tmp_path / "home")
    cert, key = str(pki.server.cert), str(pki.server.key)

    message = _refused(server, "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "proxy.local")
    assert "--trusted-proxy" in message and "'proxy.local'" in message
    done = _tether(
        "serve",
        "--listen",
        f"127.0.0.1:{server.port}",
        env={**server.env(), "TETHER_TRUSTED_PROXIES": "10.0.0.1,300.1.1.1"},
    )
    assert done.returncode == 1 and "TETHER_TRUSTED_PROXIES" in _one_line_error(done.stderr)

    assert "--tls-key" in _refused(server, "--tls-cert", cert)
    assert "--tls-cert" in _refused(server, "--tls-key", key)
    assert "--tls-client-ca" in _refused(server, "--tls-client-ca", str(pki.client_ca.path))

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert str(junk) in _refused(server, "--tls-cert", str(junk), "--tls-key", key)
    assert str(junk) in _refused(server, "--tls-cert", cert, "--tls-key", str(junk))
    missing = tmp_path / "missing.pem"
    assert str(missing) in _refused(server, "--tls-cert", str(missing), "--tls-key", key)
    assert "not the key" in _refused(server, "--tls-cert", cert, "--tls-key", str(pki.client.key))
    assert str(junk) in _refused(server, *pki.serve_flags(), "--tls-client-ca", str(junk))


def test_dev_mode_hints_say_https(pki: Pki, tmp_path: Path) -> None:
    server = Server(home=tmp_path / "home")
    done = _tether(
        "dev",
        "--once",
        "--listen",
        f"127.0.0.1:{server.port}",
        *pki.serve_flags(),
        env=server.env(),
    )
    assert done.returncode == 0, done.stderr
    assert f"export TETHER_ADDR=https://127.0.0.1:{server.port}" in done.stdout
    assert "TETHER_CACERT" in done.stdout


def test_forwarded_headers_are_not_believed_by_default(https: Server) -> None:
    """uvicorn must not rewrite the client address from X-Forwarded-For (not even from
    127.0.0.1): only Tether's own trusted proxies (--trusted-proxy) may."""
    response = httpx.get(
        f"{https.addr}/v1/sys/health",
        headers={"x-forwarded-for": "203.0.113.9", "forwarded": "for=203.0.113.9"},
        verify=https.verify(),
    )
    request_id = response.headers.get("x-request-id")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            json.loads(x) for x in https.log_file.read_text().splitlines() if x.startswith("{")
        ]
        logged = [x for x in lines if x.get("path") == "/v1/sys/health" and "client" in x]
        if request_id:
            logged = [x for x in logged if x.get("request_id") == request_id]
        if logged:
            assert {x["client"] for x in logged} == {"127.0.0.1"}
            return
        time.sleep(0.05)
    raise AssertionError("the request was not logged")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("tether.internal", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
