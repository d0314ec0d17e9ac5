"""The SPIFFE Workload API of a real `tether serve`, used by the unmodified py-spiffe
client: workloads attested by the kernel get SVIDs and bundles, talk mTLS with them, lose
them when their identity is retired, and see the CA rotate without a failed check."""

from __future__ import annotations

import copy
import json
import os
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import JwtBundleSet, WorkloadApiClient, X509Source
from spiffe.spiffe_id.spiffe_id import TrustDomain

from tests.factories import write_estate
from tests.scenario.harness import Server
from tests.spiffe.test_workload import NOBODY, _python_as

TD = "example.org"


def _estate(*, web: bool = True, batch: bool = True) -> dict[str, Any]:
    base = {
        "owner": "ops",
        "purpose": "Serves the storefront",
        "justification": "OPS-7",
        "environment": "prod",
        "kind": "workload",
        "entitlements": [{"profile": "svid"}, {"profile": "jwt"}],
    }
    identities = []
    if web:
        identities.append(
            {
                **copy.deepcopy(base),
                "id": "web",
                "attest": {"unix": {"uid": os.getuid(), "path": os.path.realpath(sys.executable)}},
            }
        )
    if batch:
        identities.append(
            {**copy.deepcopy(base), "id": "batch", "attest": {"unix": {"uid": NOBODY}}}
        )
    return {
        "version": 1,
        "trust_domain": TD,
        "owners": [{"id": "ops", "contact": "ops@example.com"}],
        "profiles": [
            {"id": "svid", "provider": "x509-svid", "max_ttl": "1h"},
            {"id": "jwt", "provider": "jwt-svid", "max_ttl": "5m"},
        ],
        "identities": identities,
    }


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    # A short path: a Unix socket's is limited to about 100 bytes.
    socket_dir = tempfile.mkdtemp(prefix="tsp", dir="/tmp")
    os.chmod(socket_dir, 0o755)
    socket_path = f"{socket_dir}/workload.sock"
    server = Server(home=tmp_path / "home", extra_env={"TETHER_SPIFFE_SOCKET": socket_path})
    server.start()
    try:
        init = server.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
        server.token = init["root_token"]
        assert server.cli("unseal", init["shares"][0]).code == 0
        applied = server.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", _estate())))
        assert applied.code == 0, applied.stderr
        _wait(lambda: _accepts(socket_path))
        yield server, f"unix://{socket_path}"
    finally:
        server.stop()


def _accepts(path: str) -> bool:
    """The socket exists and listens (it is bound, then chmod-ed, then listened on)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _wait(condition: Any, limit: float = 30.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)
    return time.monotonic() - started


def _admin(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def test_a_workload_gets_its_svids_and_bundles_and_they_verify(
    node: tuple[Server, str],
) -> None:
    server, endpoint = node
    client = WorkloadApiClient(socket_path=endpoint)
    try:
        context = client.fetch_x509_context()
        svid = context.default_svid
        assert str(svid.spiffe_id) == f"spiffe://{TD}/prod/web"
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TD))
        assert bundle is not None
        # The leaf chains to an authority of the bundle the server publishes too.
        published = httpx.get(f"{server.addr}/v1/spiffe/bundle").json()
        assert published["spiffe_sequence"] >= 1
        shown = server.cli("ca", "show", "--json")
        assert shown.code == 0, shown.stderr
        assert shown.json()["trust_domain"] == TD
        assert shown.json()["sequence"] == published["spiffe_sequence"]
        roots = {a.public_key().public_numbers() for a in bundle.x509_authorities}
        issuer_key = next(
            a.public_key() for a in bundle.x509_authorities if a.subject == svid.leaf.issuer
        )
        assert issuer_key.public_numbers() in roots

        token = client.fetch_jwt_svid(audience={"orders"})
        assert str(token.spiffe_id) == f"spiffe://{TD}/prod/web"
        # Asked again for the same audience: the same SVID (cached to half its life);
        # for another audience, another one.
        assert client.fetch_jwt_svid(audience={"orders"}).token == token.token
        assert client.fetch_jwt_svid(audience={"billing"}).token != token.token
        jwt_bundles: JwtBundleSet = client.fetch_jwt_bundles()
        jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(TrustDomain(TD))
        assert jwt_bundle is not None
        validated = client.validate_jwt_svid(token.token, "orders")
        assert str(validated.spiffe_id) == f"spiffe://{TD}/prod/web"
    finally:
        client.close()

    # Each SVID is a lease of the identity, in the audit trail with what attested it.
    leases = httpx.get(
        f"{server.addr}/v1/leases", params={"limit": 100}, headers=_admin(server)
    ).json()["items"]
    providers = [lease["provider"] for lease in leases if lease["identity"] == "web"]
    assert {"x509-svid", "jwt-svid"} <= set(providers)
    assert providers.count("jwt-svid") == 2  # orders (once, though asked twice), billing
    audit = httpx.get(
        f"{server.addr}/v1/audit", params={"limit": 1000}, headers=_admin(server)
    ).json()["items"]
    issued = [e for e in audit if e["action"] == "credential.issue" and e["identity_id"] == "web"]
    assert issued and "uid" in json.dumps(issued[0]["details"])


_CLIENT = """
import json, socket, ssl, sys, tempfile, os
sys.path.insert(0, sys.argv[1])
from spiffe import WorkloadApiClient
from cryptography.hazmat.primitives import serialization
client = WorkloadApiClient(socket_path=sys.argv[2])
try:
    context = client.fetch_x509_context()
except Exception as exc:
    print("refused: " + str(exc)); sys.exit(0)
svid = context.default_svid
folder = tempfile.mkdtemp()
cert, key, ca = (os.path.join(folder, n) for n in ("cert.pem", "key.pem", "ca.pem"))
svid.save(cert, key, serialization.Encoding.PEM)
bundle = next(iter(context.x509_bundle_set._bundles.values()))
with open(ca, "wb") as f:
    for authority in bundle.x509_authorities:
        f.write(authority.public_bytes(serialization.Encoding.PEM))
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
tls.check_hostname = False
tls.load_verify_locations(ca)
tls.load_cert_chain(cert, key)
with socket.create_connection(("127.0.0.1", int(sys.argv[3]))) as raw:
    with tls.wrap_socket(raw) as conn:
        peer = conn.getpeercert(binary_form=True)
        conn.sendall(str(svid.spiffe_id).encode())
        print("ok " + conn.recv(200).decode())
"""


def _uri_of(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    [uri] = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uri


def test_two_workloads_talk_mtls_with_their_svids_and_a_stranger_is_refused(
    node: tuple[Server, str],
) -> None:
    server, endpoint = node
    python = _python_as(NOBODY, "grpc", "spiffe")
    if python is None:
        pytest.skip(f"no Python interpreter that uid {NOBODY} can run with py-spiffe")
    source = X509Source(socket_path=endpoint)
    folder = Path(tempfile.mkdtemp())
    try:
        svid = source.get_x509_context().default_svid
        svid.save(folder / "cert.pem", folder / "key.pem", serialization.Encoding.PEM)
        bundle = source.get_bundle_for_trust_domain(TrustDomain(TD))
        assert bundle is not None
        (folder / "ca.pem").write_bytes(
            b"".join(a.public_bytes(serialization.Encoding.PEM) for a in bundle.x509_authorities)
        )
    finally:
        source.close()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(folder / "ca.pem")
    tls.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, str] = {}

    def serve() -> None:
        raw, _ = listener.accept()
        with tls.wrap_socket(raw, server_side=True) as conn:
            peer = conn.getpeercert(binary_form=True)
            assert peer is not None
            seen["client"] = _uri_of(peer)
            seen["said"] = conn.recv(200).decode()
            conn.sendall(str(svid.spiffe_id).encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [python, "-I", "-S", "-c", _CLIENT, site, endpoint, str(listener.getsockname()[1])],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    thread.join(timeout=10)
    listener.close()
    assert done.stdout.strip() == f"ok spiffe://{TD}/prod/web", done.stdout + done.stderr
    assert seen == {"client": f"spiffe://{TD}/prod/batch", "said": f"spiffe://{TD}/prod/batch"}

    # Unregistered, the same process gets nothing: PERMISSION_DENIED.
    applied = server.cli("apply", "-f", str(write_estate(folder / "e.yaml", _estate(batch=False))))
    assert applied.code == 0, applied.stderr
    refused = subprocess.run(
        [python, "-I", "-S", "-c", _CLIENT, site, endpoint, "1"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.stdout.startswith("refused:"), refused.stdout + refused.stderr
    assert "PERMISSION_DENIED" in refused.stdout or "denied" in refused.stdout.lower()


def test_retiring_the_identity_stops_its_stream_and_the_next_fetch_is_refused(
    node: tuple[Server, str], tmp_path: Path
) -> None:
    server, endpoint = node
    client = WorkloadApiClient(socket_path=endpoint)
    updates: list[Any] = []
    errors: list[Exception] = []
    handler = client.stream_x509_contexts(updates.append, errors.append, retry_connect=False)
    try:
        _wait(lambda: len(updates) >= 1)
        retired = _estate(web=False)  # gone from the file: apply retires it
        assert server.cli("apply", "-f", str(write_estate(tmp_path / "r.yaml", retired))).code == 0
        # How soon is measured by the bench, not asserted here (timed asserts are flaky).
        _wait(lambda: errors, limit=10)
        assert "PERMISSION_DENIED" in str(errors[0]) or "denied" in str(errors[0]).lower()
        served = len(updates)
        time.sleep(0.5)
        assert len(updates) == served  # nothing more is delivered
        with pytest.raises(Exception, match=r"(?i)permission|denied"):
            client.fetch_x509_svid()
    finally:
        handler.cancel()
        client.close()
    # The audit says why: the retirement, and the SVID's lease revoked for it.
    audit = httpx.get(
        f"{server.addr}/v1/audit", params={"limit": 1000}, headers=_admin(server)
    ).json()["items"]
    ended = [e for e in audit if e["action"] == "lease.revoke" and e["identity_id"] == "web"]
    assert ended and all("retired" in (e.get("reason") or "") for e in ended), ended


def test_a_ca_rotation_reaches_streams_before_any_svid_it_signs(
    node: tuple[Server, str],
) -> None:
    server, endpoint = node
    client = WorkloadApiClient(socket_path=endpoint)
    contexts: list[Any] = []
    errors: list[Exception] = []
    handler = client.stream_x509_contexts(contexts.append, errors.append)
    try:
        _wait(lambda: len(contexts) >= 1)
        before = httpx.get(f"{server.addr}/v1/spiffe/ca", headers=_admin(server)).json()
        prepared = httpx.post(
            f"{server.addr}/v1/spiffe/ca/rotate", json={}, headers=_admin(server)
        ).json()
        assert len(prepared["x509_authorities"]) == len(before["x509_authorities"]) + 1
        _wait(lambda: any(len(_authorities(c)) == 2 for c in contexts))
        activated = httpx.post(
            f"{server.addr}/v1/spiffe/ca/rotate", json={"activate": True}, headers=_admin(server)
        )
        assert activated.status_code == 200, activated.text
        # A fresh fetch is signed by the new authority; every context ever streamed
        # verifies against the bundle that came with it.
        fresh = WorkloadApiClient(socket_path=endpoint)
        try:
            new_svid = fresh.fetch_x509_svid()
        finally:
            fresh.close()
        for context in [*contexts]:
            issuers = {a.subject for a in _authorities(context)}
            assert context.default_svid.leaf.issuer in issuers
        latest = contexts[-1]
        assert new_svid.leaf.issuer in {a.subject for a in _authorities(latest)}
        assert errors == []
    finally:
        handler.cancel()
        client.close()


def _authorities(context: Any) -> list[x509.Certificate]:
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TD))
    return list(bundle.x509_authorities) if bundle is not None else []
