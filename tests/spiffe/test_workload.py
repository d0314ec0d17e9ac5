"""The Workload API socket: the unmodified py-spiffe client gets what the backend says
the calling process (as the kernel identifies it) may have, over real Unix sockets."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf.message import Message
from jwt.algorithms import ECAlgorithm
from spiffe import JwtSource, JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient, X509Source
from spiffe.workloadapi.errors import FetchJwtSvidError, FetchX509SvidError

from tether.spiffe._peer import Peer, peer_of
from tether.spiffe._port import X509SvidView
from tether.spiffe._proto import workload_pb2 as pb
from tether.spiffe._workload import WorkloadApiServer
from tether.spiffe.errors import CaUnavailable, InvalidJwtSvid, PermissionDenied

TD = "example.org"
FEDERATED_TD = "partner.example"
SELF_ID = f"spiffe://{TD}/tests"
NOBODY = 65534
HEADER = (("workload.spiffe.io", "true"),)

as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="running a process as another uid needs root"
)


# -- an in-memory backend with a real CA --------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


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


def _ca(trust_domain: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(trust_domain))
        .issuer_name(_name(trust_domain))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class MemoryBackend:
    """A WorkloadBackend over dicts: an identity per uid, SVIDs signed at test time and
    replaced, like the real one, once past half their life."""

    def __init__(self) -> None:
        self.ca_key, self.ca = _ca(TD)
        _, self.federated_ca = _ca(FEDERATED_TD)
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.by_uid: dict[int, str] = {}
        self.svid_ttl = dt.timedelta(hours=1)
        self.extra_bundle = b""  # appended to the trust domain's bundle (a large answer)
        self.failure: Exception | None = None
        self.peers: list[Peer] = []
        self.x509_calls = 0
        self.crl_der: list[bytes] = []  # what X509SVIDResponse.crl carries
        self._served: dict[str, tuple[X509SvidView, dt.datetime]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._version = 0

    # -- what tests do --
    def bump(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def rotate(self) -> None:
        with self._lock:
            self._served.clear()
        self.bump()

    def refuse_everyone(self) -> None:
        with self._lock:
            self.by_uid.clear()
        self.bump()

    # -- WorkloadBackend --
    def version(self) -> int:
        with self._changed:
            return self._version

    def wait(self, version: int, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self._version > version, timeout)
            return self._version

    def _entitled(self, peer: Peer) -> str:
        self.peers.append(peer)
        if self.failure is not None:
            raise self.failure
        with self._lock:
            spiffe_id = self.by_uid.get(peer.uid)
        if spiffe_id is None:
            raise PermissionDenied(f"no identity is registered for uid {peer.uid}")
        return spiffe_id

    def x509_svids(self, peer: Peer) -> list[X509SvidView]:
        spiffe_id = self._entitled(peer)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            self.x509_calls += 1
            served = self._served.get(spiffe_id)
            if served is None or now >= served[1]:
                view = self._issue(spiffe_id, now)
                served = (view, now + (view.expires_at - now) / 2)
                self._served[spiffe_id] = served
        return [served[0]]

    def _issue(self, spiffe_id: str, now: dt.datetime) -> X509SvidView:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("workload"))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + self.svid_ttl)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        return X509SvidView(
            spiffe_id=spiffe_id,
            cert_chain_der=_der(cert),
            key_pkcs8_der=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            bundle_der=_der(self.ca),
            expires_at=cert.not_valid_after_utc,
        )

    def crls(self) -> list[bytes]:
        return list(self.crl_der)

    def x509_bundles(self, peer: Peer) -> dict[str, bytes]:
        self._entitled(peer)
        return {TD: _der(self.ca) + self.extra_bundle, FEDERATED_TD: _der(self.federated_ca)}

    def jwt_svids(
        self, peer: Peer, audience: Sequence[str], spiffe_id: str | None
    ) -> list[tuple[str, str]]:
        own = self._entitled(peer)
        if spiffe_id not in (None, own):
            raise PermissionDenied(f"{spiffe_id} is not registered for this caller")
        now = int(time.time())
        claims = {"sub": own, "aud": list(audience), "iat": now, "exp": now + 300}
        token = jwt.encode(
            claims, self.jwt_key, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"}
        )
        return [(own, token)]

    def jwt_bundles(self, peer: Peer) -> dict[str, bytes]:
        self._entitled(peer)
        jwk = ECAlgorithm.to_jwk(self.jwt_key.public_key(), as_dict=True)
        return {TD: json.dumps({"keys": [{**jwk, "kid": "k1", "use": "jwt-svid"}]}).encode()}

    def validate_jwt(self, peer: Peer, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        self._entitled(peer)
        try:
            claims = jwt.decode(
                token, self.jwt_key.public_key(), algorithms=["ES256"], audience=audience
            )
        except jwt.InvalidTokenError:
            raise InvalidJwtSvid("the JWT-SVID is not valid for this audience") from None
        return str(claims["sub"]), claims


# -- fixtures and clients -----------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # Short (a socket path has ~100 bytes) and reachable by another uid's process.
    path = tempfile.mkdtemp(dir="/tmp", prefix="tether-wl-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend() -> MemoryBackend:
    b = MemoryBackend()
    b.by_uid[os.getuid()] = SELF_ID
    return b


@pytest.fixture
def socket_path(backend: MemoryBackend, socket_dir: str) -> Iterator[str]:
    path = os.path.join(socket_dir, "agent.sock")
    server = WorkloadApiServer(backend, path)
    server.start()
    yield path
    server.stop()


@pytest.fixture
def client(socket_path: str) -> Iterator[WorkloadApiClient]:
    with WorkloadApiClient(socket_path=f"unix://{socket_path}", default_timeout=10) as c:
        yield c


@pytest.fixture
def channel(socket_path: str) -> Iterator[grpc.Channel]:
    """grpcio without py-spiffe's interceptor: the tests choose the metadata."""
    with grpc.insecure_channel(f"unix:{socket_path}") as c:
        yield c


def _x509_stream(channel: grpc.Channel, metadata: Sequence[tuple[str, str]] = HEADER) -> Any:
    call = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509SVID",
        request_serializer=pb.X509SVIDRequest.SerializeToString,
        response_deserializer=pb.X509SVIDResponse.FromString,
    )
    return call(pb.X509SVIDRequest(), metadata=metadata, timeout=30)


def _unary(channel: grpc.Channel, method: str, request: Message, response: type[Message]) -> Any:
    call = channel.unary_unary(
        f"/SpiffeWorkloadAPI/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response.FromString,
    )
    return call(request, metadata=HEADER, timeout=10)


def _rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _this_process() -> Peer:
    binary = os.path.realpath(sys.executable)
    return Peer(os.getpid(), os.getuid(), os.getgid(), binary, _sha256(binary))


# -- the unmodified py-spiffe client ------------------------------------------------


def test_the_client_fetches_its_x509_context(backend: MemoryBackend, client: Any) -> None:
    context = client.fetch_x509_context()
    svid = context.default_svid
    assert str(svid.spiffe_id) == SELF_ID
    assert svid.leaf.issuer == backend.ca.subject
    assert svid.leaf.public_key() == svid.private_key.public_key()
    own = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TD))
    assert own.x509_authorities == {backend.ca}
    # A foreign trust domain's bundle travels as a federated bundle.
    partner = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(FEDERATED_TD))
    assert partner.x509_authorities == {backend.federated_ca}
    # Who asked is what the kernel says: this process, its uid and its binary.
    assert backend.peers[-1] == _this_process()


def test_the_client_fetches_the_x509_bundles(backend: MemoryBackend, client: Any) -> None:
    bundles = client.fetch_x509_bundles()
    assert bundles.get_bundle_for_trust_domain(TrustDomain(TD)).x509_authorities == {backend.ca}
    partner = bundles.get_bundle_for_trust_domain(TrustDomain(FEDERATED_TD))
    assert partner.x509_authorities == {backend.federated_ca}


def test_a_jwt_svid_is_fetched_and_validates_offline_and_through_the_api(client: Any) -> None:
    svid = client.fetch_jwt_svid(audience={"orders"})
    assert str(svid.spiffe_id) == SELF_ID
    assert svid.audience == {"orders"}
    bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(TrustDomain(TD))
    offline = JwtSvid.parse_and_validate(svid.token, bundle, {"orders"})
    assert str(offline.spiffe_id) == SELF_ID
    validated = client.validate_jwt_svid(svid.token, "orders")
    assert str(validated.spiffe_id) == SELF_ID


def test_the_api_refuses_a_jwt_svid_for_another_audience(client: Any, channel: Any) -> None:
    token = client.fetch_jwt_svid(audience={"orders"}).token
    request = pb.ValidateJWTSVIDRequest(audience="billing", svid=token)
    error = _rpc_error(
        lambda: _unary(channel, "ValidateJWTSVID", request, pb.ValidateJWTSVIDResponse)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "the JWT-SVID is not valid for this audience"
    # What the API does return: the SPIFFE ID and the claims.
    good = pb.ValidateJWTSVIDRequest(audience="orders", svid=token)
    answer = _unary(channel, "ValidateJWTSVID", good, pb.ValidateJWTSVIDResponse)
    assert answer.spiffe_id == SELF_ID
    assert answer.claims["sub"] == SELF_ID
    assert list(answer.claims["aud"]) == ["orders"]


def test_a_jwt_source_serves_svids_and_bundles(backend: MemoryBackend, socket_path: str) -> None:
    source = JwtSource(socket_path=f"unix://{socket_path}", timeout_in_seconds=10)
    try:
        svid = source.fetch_svid(audience={"orders"})
        bundle = source.get_bundle_for_trust_domain(TrustDomain(TD))
        assert bundle is not None
        assert set(bundle.jwt_authorities) == {"k1"}
        assert str(svid.spiffe_id) == SELF_ID
    finally:
        source.close()


def test_a_jwt_svid_for_someone_else_is_refused(client: Any) -> None:
    other = SpiffeId(f"spiffe://{TD}/someone-else")
    with pytest.raises(FetchJwtSvidError, match="PERMISSION_DENIED"):
        client.fetch_jwt_svid(audience={"orders"}, subject=other)


def test_a_caller_entitled_to_nothing_gets_permission_denied(
    backend: MemoryBackend, client: Any
) -> None:
    backend.by_uid.clear()
    with pytest.raises(FetchX509SvidError) as caught:
        client.fetch_x509_context()
    assert "PERMISSION_DENIED" in str(caught.value)
    assert f"no identity is registered for uid {os.getuid()}" in str(caught.value)
    with pytest.raises(FetchJwtSvidError, match="PERMISSION_DENIED"):
        client.fetch_jwt_svid(audience={"orders"})


# -- the protocol, from grpcio and from bare HTTP/2 ---------------------------------


@pytest.mark.parametrize("metadata", [(), (("workload.spiffe.io", "false"),)])
def test_a_request_without_the_security_header_is_invalid(
    channel: Any, metadata: Sequence[tuple[str, str]]
) -> None:
    error = _rpc_error(lambda: next(_x509_stream(channel, metadata)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "workload.spiffe.io" in error.details()


def test_mandatory_fields_are_required(channel: Any) -> None:
    no_audience = pb.JWTSVIDRequest()
    error = _rpc_error(lambda: _unary(channel, "FetchJWTSVID", no_audience, pb.JWTSVIDResponse))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "audience is required"
    no_token = pb.ValidateJWTSVIDRequest(audience="orders")
    error = _rpc_error(
        lambda: _unary(channel, "ValidateJWTSVID", no_token, pb.ValidateJWTSVIDResponse)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unsupported_profile_is_unimplemented(channel: Any) -> None:
    error = _rpc_error(
        lambda: _unary(channel, "FetchWITSVID", pb.WITSVIDRequest(), pb.WITSVIDResponse)
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_backend_errors_map_to_status_codes_and_hide_what_they_say(
    backend: MemoryBackend, channel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend.failure = PermissionDenied("nothing for “uid 0” at 100%")
    error = _rpc_error(lambda: next(_x509_stream(channel)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "nothing for “uid 0” at 100%"  # percent-encoded on the wire

    backend.failure = CaUnavailable("Tether is sealed")
    error = _rpc_error(lambda: next(_x509_stream(channel)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # the client retries with a backoff

    backend.failure = RuntimeError("row 42 of table leases is corrupt")
    error = _rpc_error(lambda: next(_x509_stream(channel)))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"  # what the backend said stays in the log
    assert "row 42" not in error.details()
    assert "a Workload API call failed" in caplog.text


class RawClient:
    """A bare HTTP/2 client: sends exactly what a test says, and opens its receive
    window only when told to."""

    def __init__(self, path: str, window: int = 65535) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window},
        )
        self.h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def request(
        self,
        method: str,
        body: bytes,
        *,
        http_method: str = "POST",
        headers: Sequence[tuple[str, str]] = HEADER,
        content_type: str = "application/grpc",
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            sid,
            [
                (":method", http_method),
                (":scheme", "http"),
                (":authority", "localhost"),
                (":path", f"/SpiffeWorkloadAPI/{method}"),
                ("content-type", content_type),
                ("te", "trailers"),
                *headers,
            ],
        )
        self.h2.send_data(sid, body, end_stream=True)
        self._flush()
        return sid

    def read(self, answer: Answer, *, grant: bool, seconds: float) -> Answer:
        """Read until the stream ends, a whole message has come, or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while not answer.ended and not answer.whole_message:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            for event in self.h2.receive_data(data):
                answer.take(event)
                if grant and isinstance(event, h2.events.DataReceived) and event.data:
                    self.grant(event.stream_id, len(event.data))
            self._flush()
        return answer

    def grant(self, sid: int, size: int) -> None:
        """Open the receive window by `size` (the stream's and the connection's)."""
        self.h2.increment_flow_control_window(size)
        self.h2.increment_flow_control_window(size, sid)
        self._flush()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Answer:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False

    def take(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.headers = dict(event.headers)
            if event.stream_ended is not None:
                self.trailers, self.ended = self.headers, True  # trailers-only
        elif isinstance(event, h2.events.DataReceived):
            self.data += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            self.ended = True

    @property
    def whole_message(self) -> bool:
        return len(self.data) >= 5 and len(self.data) >= 5 + int.from_bytes(self.data[1:5], "big")


def _framed(message: Message, *, compressed: bool = False) -> bytes:
    payload = message.SerializeToString()
    return bytes([int(compressed)]) + len(payload).to_bytes(4, "big") + payload


@pytest.fixture
def raw(socket_path: str) -> Iterator[RawClient]:
    c = RawClient(socket_path, window=1000)
    yield c
    c.close()


def test_a_response_larger_than_the_clients_window_waits_for_the_window(
    backend: MemoryBackend, raw: RawClient
) -> None:
    backend.extra_bundle = _der(backend.ca) * 400  # some 200 KB
    sid = raw.request("FetchX509Bundles", _framed(pb.X509BundlesRequest()))
    answer = raw.read(Answer(), grant=False, seconds=1.0)
    assert answer.headers[b":status"] == b"200"
    assert len(answer.data) == 1000  # the window, and not a byte more
    raw.grant(sid, 1000)
    answer = raw.read(answer, grant=True, seconds=10)
    assert answer.whole_message
    bundles = pb.X509BundlesResponse.FromString(bytes(answer.data[5:]))
    assert bundles.bundles[f"spiffe://{TD}"] == _der(backend.ca) * 401


def test_a_compressed_request_is_refused(raw: RawClient) -> None:
    raw.request(
        "FetchJWTSVID",
        _framed(pb.JWTSVIDRequest(audience=["orders"]), compressed=True),
        headers=(*HEADER, ("grpc-encoding", "gzip")),
    )
    answer = raw.read(Answer(), grant=True, seconds=10)
    assert answer.ended
    assert answer.trailers[b"grpc-status"] == b"12"  # UNIMPLEMENTED


@pytest.mark.parametrize(
    ("http_method", "content_type", "status"),
    [("GET", "application/grpc", b"405"), ("POST", "application/json", b"415")],
)
def test_a_request_that_is_not_grpc_gets_an_http_status(
    raw: RawClient, http_method: str, content_type: str, status: bytes
) -> None:
    raw.request("FetchX509SVID", b"", http_method=http_method, content_type=content_type)
    answer = raw.read(Answer(), grant=True, seconds=10)
    assert answer.headers[b":status"] == status


# -- streams ------------------------------------------------------------------------


def test_an_x509_source_picks_up_a_rotated_svid(backend: MemoryBackend, socket_path: str) -> None:
    source = X509Source(socket_path=f"unix://{socket_path}", timeout_in_seconds=10)
    try:
        first = source.get_x509_context().default_svid
        updated = threading.Event()
        source.subscribe_for_updates(updated.set)
        backend.rotate()
        assert updated.wait(10)
        second = source.get_x509_context().default_svid
        assert second.spiffe_id == first.spiffe_id
        assert second.leaf.serial_number != first.leaf.serial_number
    finally:
        source.close()


def test_an_svid_is_replaced_before_it_expires_with_nothing_else_changing(
    backend: MemoryBackend, channel: Any
) -> None:
    backend.svid_ttl = dt.timedelta(seconds=3)
    stream = _x509_stream(channel)
    first = next(stream).svids[0]
    second = next(stream).svids[0]  # at half its remaining life
    assert second.x509_svid != first.x509_svid
    expires = x509.load_der_x509_certificate(first.x509_svid).not_valid_after_utc
    assert dt.datetime.now(dt.UTC) < expires
    assert backend.version() == 0
    stream.cancel()


def test_a_stream_ends_with_permission_denied_once_the_caller_is_refused(
    backend: MemoryBackend, channel: Any
) -> None:
    stream = _x509_stream(channel)
    assert next(stream).svids[0].spiffe_id == SELF_ID
    backend.refuse_everyone()
    error = _rpc_error(lambda: next(stream))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == f"no identity is registered for uid {os.getuid()}"


def test_a_cancelled_stream_stops_and_the_others_go_on(
    backend: MemoryBackend, channel: Any
) -> None:
    cancelled, live = _x509_stream(channel), _x509_stream(channel)
    next(cancelled)
    first = next(live)
    cancelled.cancel()
    time.sleep(0.3)  # the RST_STREAM reaches the server
    calls = backend.x509_calls
    backend.rotate()
    assert next(live).svids[0].x509_svid != first.svids[0].x509_svid
    time.sleep(0.3)
    assert backend.x509_calls == calls + 1  # the live stream asked; the cancelled one did not


def test_stopping_ends_every_stream_promptly_and_removes_the_socket(
    backend: MemoryBackend, socket_dir: str
) -> None:
    path = os.path.join(socket_dir, "agent.sock")
    server = WorkloadApiServer(backend, path)
    server.start()
    with grpc.insecure_channel(f"unix:{path}") as channel:
        streams = [_x509_stream(channel) for _ in range(3)]
        for stream in streams:
            next(stream)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        for stream in streams:
            error = _rpc_error(lambda s=stream: next(s))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert not os.path.exists(path)


# -- the socket ---------------------------------------------------------------------


def test_the_socket_is_open_to_every_local_user_and_served_once(
    backend: MemoryBackend, socket_path: str
) -> None:
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o777
    with pytest.raises(OSError, match="another server is listening"):
        WorkloadApiServer(backend, socket_path).start()


def test_a_dead_servers_socket_is_replaced_but_a_file_is_not(
    backend: MemoryBackend, socket_dir: str
) -> None:
    path = os.path.join(socket_dir, "agent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)  # bound, never listening: what a crashed server leaves
    server = WorkloadApiServer(backend, path)
    server.start()
    try:
        with WorkloadApiClient(socket_path=f"unix://{path}", default_timeout=10) as client:
            assert str(client.fetch_x509_svid().spiffe_id) == SELF_ID
    finally:
        server.stop()
    regular = os.path.join(socket_dir, "notes.txt")
    with open(regular, "w") as f:
        f.write("not a socket")
    with pytest.raises(FileExistsError):
        WorkloadApiServer(backend, regular).start()
    with open(regular) as f:
        assert f.read() == "not a socket"


# -- the kernel's word --------------------------------------------------------------


def test_peer_of_names_this_process_and_its_binary() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert peer_of(a) == _this_process()


_CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "s.connect(sys.argv[1])\n"
    "if sys.argv[2] == 'stay':\n"
    "    print('connected', flush=True)\n"
    "    sys.stdin.read()\n"
)


@pytest.fixture
def listener(socket_dir: str) -> Iterator[tuple[socket.socket, str]]:
    path = os.path.join(socket_dir, "peer.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o777)
    sock.listen()
    sock.settimeout(30)
    yield sock, path
    sock.close()


def _python_as(uid: int, *modules: str) -> str | None:
    """An interpreter `uid` can run that imports `modules` from this venv (/root, where
    this one may live, is closed to other users; the system's same-version one is not)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    imports = "; ".join(f"import {m}" for m in modules) or "pass"
    site = sysconfig.get_paths()["purelib"]
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
        try:
            probe = subprocess.run(
                [
                    candidate,
                    "-I",
                    "-S",
                    "-c",
                    f"import sys; sys.path.insert(0, {site!r}); {imports}",
                ],
                user=uid,
                group=uid,
                extra_groups=[],
                capture_output=True,
                timeout=60,
                check=False,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return os.path.realpath(candidate)
    return None


@as_root
def test_peer_of_names_another_users_process(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    python = _python_as(NOBODY)
    if python is None:
        pytest.skip(f"no Python interpreter that uid {NOBODY} can run")
    child = subprocess.Popen(
        [python, "-I", "-S", "-c", _CONNECT, path, "stay"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        conn, _ = sock.accept()
        with conn:
            peer = peer_of(conn)
        assert peer == Peer(child.pid, NOBODY, NOBODY, python, _sha256(python))
    finally:
        child.communicate(timeout=30)


def test_a_caller_that_exited_keeps_its_uid_but_names_no_binary(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    child = subprocess.run([sys.executable, "-c", _CONNECT, path, "leave"], check=True)
    assert child.returncode == 0
    conn, _ = sock.accept()  # connected, and gone since
    with conn:
        peer = peer_of(conn)
    assert (peer.uid, peer.gid) == (os.getuid(), os.getgid())
    assert (peer.path, peer.sha256) == (None, None)


def test_a_binary_replaced_on_disk_is_hashed_as_it_runs(
    listener: tuple[socket.socket, str], socket_dir: str
) -> None:
    sock, path = listener
    app = os.path.join(socket_dir, "app")
    shutil.copy2(os.path.realpath(sys.executable), app)
    running = _sha256(app)
    child = subprocess.Popen(
        [app, "-c", _CONNECT, path, "stay"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "connected\n"
        replacement = os.path.join(socket_dir, "app.new")
        with open(replacement, "wb") as f:
            f.write(b"#!/bin/sh\necho something else\n")
        os.replace(replacement, app)  # what a package upgrade does
        conn, _ = sock.accept()
        with conn:
            peer = peer_of(conn)
        assert peer.sha256 == running != _sha256(app)
        assert peer.path == f"{app} (deleted)"  # the path no longer holds what runs
    finally:
        child.communicate(timeout=30)


_FETCH = """
import sys
sys.path.insert(0, sys.argv[1])
from spiffe import WorkloadApiClient
with WorkloadApiClient(socket_path="unix://" + sys.argv[2], default_timeout=10) as client:
    try:
        svid = client.fetch_x509_svid()
    except Exception as exc:
        print("refused:", exc)
    else:
        print("svid:", svid.spiffe_id)
"""


@as_root
def test_another_users_process_gets_that_users_identity_and_nothing_else(
    backend: MemoryBackend, socket_path: str
) -> None:
    python = _python_as(NOBODY, "grpc", "spiffe")
    if python is None:
        pytest.skip(f"no Python interpreter that uid {NOBODY} can run with py-spiffe")

    def fetch() -> str:
        site = sysconfig.get_paths()["purelib"]
        done = subprocess.run(
            [python, "-I", "-S", "-c", _FETCH, site, socket_path],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    backend.by_uid[NOBODY] = f"spiffe://{TD}/nobody"
    assert fetch() == f"svid: spiffe://{TD}/nobody"
    caller = backend.peers[-1]
    assert (caller.uid, caller.gid, caller.path) == (NOBODY, NOBODY, python)
    del backend.by_uid[NOBODY]
    refused = fetch()
    assert refused.startswith("refused:")
    assert "PERMISSION_DENIED" in refused
    assert f"no identity is registered for uid {NOBODY}" in refused


def test_the_socket_is_not_served_from_a_directory_others_may_write(tmp_path: Path) -> None:
    from tether.spiffe._socket import WorkloadSocket, unsafe_directory

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert "may be written by other users" in (unsafe_directory(shared) or "")
    socket_ = WorkloadSocket(MemoryBackend(), shared / "workload.sock")
    socket_.start()
    socket_.stop()
    assert not (shared / "workload.sock").exists()
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot remove what is ours
    assert unsafe_directory(shared) is None
    shared.chmod(0o755)
    assert unsafe_directory(shared) is None
