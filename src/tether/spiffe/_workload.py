"""The SPIFFE Workload API on a Unix socket: gRPC over HTTP/2, spoken here.

Attestation by the kernel is the point of the socket: who asks decides what is served.
grpcio's server does not tell a handler which process is on the other end of a Unix
socket, so this module serves the small part of gRPC the Workload API needs over `h2`
(a sans-IO HTTP/2 state machine) on an asyncio Unix-socket server in its own thread. The
caller's credentials (`peer_of`) are read once per connection, at accept.

What it speaks: unary and server-streaming RPCs (each request is one message); the
5-byte message framing without compression (a compressed request is refused); response
headers, messages and trailers with `grpc-status`/`grpc-message`; HTTP/2 flow control (a
stream whose window is closed waits for the client's WINDOW_UPDATE); a client's
RST_STREAM or a closed connection ends the stream's task; stopping sends UNAVAILABLE to
every open stream, then GOAWAY. Every request must carry the Workload API's security
header `workload.spiffe.io: true` (else INVALID_ARGUMENT, per the SPIFFE Workload
Endpoint spec). RPCs outside the X509-SVID and JWT-SVID profiles (the WIT-SVID profile)
answer UNIMPLEMENTED, as the spec requires of a server that does not support them.

Streams (FetchX509SVID, FetchX509Bundles, FetchJWTBundles) send the caller's current
answer at once, then again whenever `backend.version()` moves (and, for X509-SVIDs, at
half the remaining life of the first one to expire, so a replacement goes out before
expiry); an answer identical to the last one sent is not repeated. One watcher thread
waits on `backend.wait` for all streams, which then cost nothing while idle. If the
backend refuses the caller mid-stream, the stream ends with PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import logging
import os
import socket
import stat
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from google.protobuf.message import DecodeError, Message

from tether.spiffe._peer import Peer, peer_of
from tether.spiffe._port import WorkloadBackend
from tether.spiffe._proto import workload_pb2 as pb
from tether.spiffe.errors import CaUnavailable, InvalidJwtSvid, PermissionDenied

log = logging.getLogger("tether.spiffe")

#: Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_CONCURRENT_STREAMS = 100
#: Connections served at once; more are closed on accept (a local caller cannot take
#: every file descriptor of the node).
MAX_CONNECTIONS = 1024
#: The largest request message (the largest is a JWT to validate: a few KiB).
MAX_REQUEST_BYTES = 64 * 1024
#: The largest response message: what gRPC clients accept by default.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Threads that run backend calls (the event loop never blocks on the backend).
_BACKEND_THREADS = 8
#: How long the watcher blocks in backend.wait before it checks whether to stop.
_WAIT_SLICE = 0.2
#: Bounds of the time a stream waits with nothing new: at least this (an SVID about to
#: expire is not asked for in a busy loop), at most that (a resync in case a change was
#: missed; an unchanged answer is not resent).
_MIN_REFRESH = 1.0
_MAX_REFRESH = 300.0
#: How long stopping waits for a client to take its last frames.
_GOODBYE_SECONDS = 1.0
_READ_SIZE = 64 * 1024

_SECURITY_HEADER = b"workload.spiffe.io"
_SERVICE = "/SpiffeWorkloadAPI/"

_P = ParamSpec("_P")
_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)


class _Code(enum.IntEnum):
    """gRPC status codes (the ones this server answers with)."""

    OK = 0
    INVALID_ARGUMENT = 3
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class _RpcError(Exception):
    def __init__(self, code: _Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- what the RPCs do ---------------------------------------------------------------


class _Hub:
    """What every connection shares, on the event loop: the backend and its version."""

    def __init__(self, backend: WorkloadBackend, executor: ThreadPoolExecutor, version: int):
        self.backend = backend
        self.version = version
        self._executor = executor
        self._changed = asyncio.Event()

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def moved(self, version: int) -> None:
        """The backend's version grew (called on the loop by the watcher)."""
        if version > self.version:
            self.version = version
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def changed_since(self, seen: int, timeout: float) -> None:
        """Return when the version has moved past `seen`, or after `timeout` seconds."""
        if self.version > seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


@dataclass(frozen=True, slots=True)
class _Call:
    peer: Peer
    request: bytes
    send: Callable[[bytes], Awaitable[None]]


_Handler = Callable[[_Hub, _Call], Awaitable[None]]


def _decode(cls: type[_M], data: bytes) -> _M:
    message = cls()
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise _RpcError(
            _Code.INVALID_ARGUMENT, f"the request is not a {cls.DESCRIPTOR.name}"
        ) from None
    return message


def _encode(message: Message) -> bytes:
    # Deterministic, so that an unchanged answer serializes the same (maps included).
    payload = message.SerializeToString(deterministic=True)
    if len(payload) > MAX_RESPONSE_BYTES:
        raise _RpcError(
            _Code.RESOURCE_EXHAUSTED,
            f"the response is larger than gRPC clients accept ({MAX_RESPONSE_BYTES} bytes)",
        )
    return payload


def _bundle_key(trust_domain: str) -> str:
    """Bundles are keyed by the trust domain's SPIFFE ID (spiffe://name)."""
    return trust_domain if trust_domain.startswith("spiffe://") else f"spiffe://{trust_domain}"


def _keyed(bundles: Mapping[str, bytes]) -> dict[str, bytes]:
    return {_bundle_key(td): value for td, value in bundles.items()}


def _trust_domain_of(spiffe_id: str) -> str:
    return "spiffe://" + spiffe_id.removeprefix("spiffe://").split("/", 1)[0]


def _x509_svid_answer(backend: WorkloadBackend, peer: Peer) -> tuple[bytes, float]:
    svids = backend.x509_svids(peer)
    if not svids:
        raise PermissionDenied("no X509-SVID is registered for this caller")
    own = {_trust_domain_of(svid.spiffe_id) for svid in svids}
    federated = {td: der for td, der in _keyed(backend.x509_bundles(peer)).items() if td not in own}
    response = pb.X509SVIDResponse(
        svids=[
            pb.X509SVID(
                spiffe_id=svid.spiffe_id,
                x509_svid=svid.cert_chain_der,
                x509_svid_key=svid.key_pkcs8_der,
                bundle=svid.bundle_der,
                hint=svid.hint,
            )
            for svid in svids
        ],
        crl=backend.crls(),
        federated_bundles=federated,
    )
    # Ask again at half the remaining life of the first to expire: the backend replaces
    # an SVID past half its life, and the replacement must reach the client before expiry.
    remaining = (min(svid.expires_at for svid in svids) - dt.datetime.now(dt.UTC)).total_seconds()
    return _encode(response), min(max(remaining / 2, _MIN_REFRESH), _MAX_REFRESH)


def _x509_bundles_answer(backend: WorkloadBackend, peer: Peer) -> tuple[bytes, float]:
    bundles = backend.x509_bundles(peer)
    if not bundles:
        raise PermissionDenied("no X.509 bundle is available to this caller")
    return _encode(pb.X509BundlesResponse(bundles=_keyed(bundles))), _MAX_REFRESH


def _jwt_bundles_answer(backend: WorkloadBackend, peer: Peer) -> tuple[bytes, float]:
    bundles = backend.jwt_bundles(peer)
    if not bundles:
        raise PermissionDenied("no JWT bundle is available to this caller")
    return _encode(pb.JWTBundlesResponse(bundles=_keyed(bundles))), _MAX_REFRESH


async def _stream(
    hub: _Hub, call: _Call, answer: Callable[[WorkloadBackend, Peer], tuple[bytes, float]]
) -> None:
    """Send the answer now, then whenever it changes, until the client goes away."""
    sent: bytes | None = None
    while True:
        seen = hub.version  # before asking: a change during the call wakes the next wait
        payload, refresh = await hub.run(answer, hub.backend, call.peer)
        if payload != sent:
            await call.send(payload)
            sent = payload
        await hub.changed_since(seen, refresh)


async def _fetch_x509_svid(hub: _Hub, call: _Call) -> None:
    _decode(pb.X509SVIDRequest, call.request)
    await _stream(hub, call, _x509_svid_answer)


async def _fetch_x509_bundles(hub: _Hub, call: _Call) -> None:
    _decode(pb.X509BundlesRequest, call.request)
    await _stream(hub, call, _x509_bundles_answer)


async def _fetch_jwt_bundles(hub: _Hub, call: _Call) -> None:
    _decode(pb.JWTBundlesRequest, call.request)
    await _stream(hub, call, _jwt_bundles_answer)


async def _fetch_jwt_svid(hub: _Hub, call: _Call) -> None:
    request = _decode(pb.JWTSVIDRequest, call.request)
    audience = list(request.audience)
    if not audience or not all(audience):
        raise _RpcError(_Code.INVALID_ARGUMENT, "audience is required")
    svids = await hub.run(hub.backend.jwt_svids, call.peer, audience, request.spiffe_id or None)
    if not svids:
        raise PermissionDenied("no JWT-SVID is registered for this caller")
    response = pb.JWTSVIDResponse(
        svids=[pb.JWTSVID(spiffe_id=spiffe_id, svid=token) for spiffe_id, token in svids]
    )
    await call.send(_encode(response))


async def _validate_jwt_svid(hub: _Hub, call: _Call) -> None:
    request = _decode(pb.ValidateJWTSVIDRequest, call.request)
    if not request.audience:
        raise _RpcError(_Code.INVALID_ARGUMENT, "audience is required")
    if not request.svid:
        raise _RpcError(_Code.INVALID_ARGUMENT, "svid is required")
    spiffe_id, claims = await hub.run(
        hub.backend.validate_jwt, call.peer, request.svid, request.audience
    )
    response = pb.ValidateJWTSVIDResponse(spiffe_id=spiffe_id)
    response.claims.update(claims)
    await call.send(_encode(response))


_METHODS: dict[bytes, _Handler] = {
    f"{_SERVICE}{name}".encode(): handler
    for name, handler in (
        ("FetchX509SVID", _fetch_x509_svid),
        ("FetchX509Bundles", _fetch_x509_bundles),
        ("FetchJWTSVID", _fetch_jwt_svid),
        ("FetchJWTBundles", _fetch_jwt_bundles),
        ("ValidateJWTSVID", _validate_jwt_svid),
    )
}


# -- gRPC over HTTP/2 ---------------------------------------------------------------


def _messages(body: bytes) -> list[bytes]:
    """Split a request body into its length-prefixed messages."""
    out: list[bytes] = []
    at = 0
    while at < len(body):
        if len(body) - at < 5:
            raise _RpcError(_Code.INVALID_ARGUMENT, "a request message is truncated")
        flags, size = body[at], int.from_bytes(body[at + 1 : at + 5], "big")
        if flags & 1:
            raise _RpcError(_Code.UNIMPLEMENTED, "compressed messages are not supported")
        if len(body) - at - 5 < size:
            raise _RpcError(_Code.INVALID_ARGUMENT, "a request message is truncated")
        out.append(body[at + 5 : at + 5 + size])
        at += 5 + size
    return out


def _percent_encoded(message: str) -> bytes:
    """grpc-message: UTF-8, percent-encoding all but printable ASCII other than '%'."""
    return b"".join(
        bytes([byte]) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        for byte in message.encode()
    )


@dataclass(slots=True, eq=False)
class _Stream:
    stream_id: int
    #: None for a request refused at its headers (it never runs).
    handler: _Handler | None
    method: str
    body: bytearray = field(default_factory=bytearray)
    remote_ended: bool = False
    headers_sent: bool = False
    #: Our side is over: trailers sent, or the stream reset.
    done: bool = False
    task: asyncio.Task[None] | None = None


class _Connection:
    """One client connection: one h2 state machine, a reader, a task per RPC."""

    def __init__(
        self,
        hub: _Hub,
        peer: Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._hub = hub
        self._peer = peer
        self._reader = reader
        self._writer = writer
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: (
                    h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
                ),
            },
        )
        self._streams: dict[int, _Stream] = {}
        self._window_opened = asyncio.Event()
        self._closing = False

    # -- the read side --

    async def run(self) -> None:
        try:
            self._h2.initiate_connection()
            await self._flush()
            while not self._closing:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                try:
                    events = self._h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    await self._flush()  # h2 has queued a GOAWAY that says why
                    break
                for event in events:
                    self._on_event(event)
                await self._flush()
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            await self._end_all()
            self._writer.close()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._on_request_end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            opened, self._window_opened = self._window_opened, asyncio.Event()
            opened.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._closing = True  # the client's GOAWAY: it sends nothing more

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        headers: dict[bytes, list[bytes]] = {}
        for name, value in event.headers:
            headers.setdefault(name, []).append(value)
        if headers.get(b":method") != [b"POST"]:
            self._refuse_http(sid, 405)
            return
        content_type = (headers.get(b"content-type") or [b""])[0]
        if not (
            content_type == b"application/grpc"
            or content_type.startswith((b"application/grpc+", b"application/grpc;"))
        ):
            self._refuse_http(sid, 415)
            return
        path = (headers.get(b":path") or [b""])[0]
        stream = _Stream(sid, _METHODS.get(path), path.decode("ascii", "replace"))
        self._streams[sid] = stream
        if headers.get(_SECURITY_HEADER) != [b"true"]:
            self._end(
                stream,
                _Code.INVALID_ARGUMENT,
                "the security header workload.spiffe.io: true is missing",
            )
        elif path not in _METHODS:
            self._end(stream, _Code.UNIMPLEMENTED, f"unknown method {stream.method}")

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        # Always hand the window back, or the connection's window closes for good.
        self._h2.acknowledge_received_data(event.flow_controlled_length, sid)
        stream = self._streams.get(sid)
        if stream is None or stream.done or stream.task is not None:
            return
        if len(stream.body) + len(event.data) > MAX_REQUEST_BYTES:
            self._end(
                stream,
                _Code.RESOURCE_EXHAUSTED,
                f"the request is larger than {MAX_REQUEST_BYTES} bytes",
            )
            return
        stream.body += event.data

    def _on_request_end(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        stream.remote_ended = True
        try:
            messages = _messages(bytes(stream.body))
            if len(messages) != 1:
                raise _RpcError(_Code.INVALID_ARGUMENT, "expected exactly one request message")
        except _RpcError as exc:
            self._end(stream, exc.code, exc.message)
            return
        stream.body = bytearray()
        assert stream.handler is not None  # a stream without one is ended at its headers
        stream.task = asyncio.create_task(self._serve(stream, stream.handler, messages[0]))

    def _on_reset(self, sid: int) -> None:
        stream = self._streams.pop(sid, None)
        if stream is not None:
            stream.done = True
            if stream.task is not None:
                stream.task.cancel()

    # -- the write side --

    async def _serve(self, stream: _Stream, handler: _Handler, request: bytes) -> None:
        call = _Call(self._peer, request, functools.partial(self._send_message, stream))
        code, message = _Code.OK, ""
        try:
            await handler(self._hub, call)
        except _RpcError as exc:
            code, message = exc.code, exc.message
        except PermissionDenied as exc:
            code, message = _Code.PERMISSION_DENIED, str(exc) or "permission denied"
        except InvalidJwtSvid as exc:
            code, message = _Code.INVALID_ARGUMENT, str(exc) or "invalid JWT-SVID"
        except CaUnavailable as exc:
            code, message = _Code.UNAVAILABLE, str(exc) or "the trust domain's CA is unavailable"
        except (ConnectionError, OSError, h2.exceptions.ProtocolError):
            return  # the stream or the connection is gone: nobody to tell
        except Exception:
            # The message names nothing the backend said: it could carry anything.
            log.exception(
                "a Workload API call failed", extra={"method": stream.method, "pid": self._peer.pid}
            )
            code, message = _Code.INTERNAL, "internal error"
        self._end(stream, code, message)
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush()

    async def _send_message(self, stream: _Stream, payload: bytes) -> None:
        sid = stream.stream_id
        if not stream.headers_sent:
            self._h2.send_headers(sid, _response_headers())
            stream.headers_sent = True
        data = memoryview(b"\x00" + len(payload).to_bytes(4, "big") + payload)  # uncompressed
        while data:
            # Taken before looking at the window: an update that comes while we flush
            # sets this one (a later event would miss it).
            opened = self._window_opened
            size = min(self._h2.local_flow_control_window(sid), self._h2.max_outbound_frame_size)
            if size <= 0:
                await self._flush()
                await opened.wait()  # a WINDOW_UPDATE or new SETTINGS
                continue
            self._h2.send_data(sid, bytes(data[:size]))
            data = data[size:]
        await self._flush()

    def _end(self, stream: _Stream, code: _Code, message: str) -> None:
        """End our side of the stream with a gRPC status (trailers-only if nothing sent)."""
        if stream.done:
            return
        stream.done = True
        self._streams.pop(stream.stream_id, None)
        trailers = [] if stream.headers_sent else _response_headers()
        trailers.append((b"grpc-status", str(int(code)).encode()))
        if message:
            trailers.append((b"grpc-message", _percent_encoded(message)))
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.send_headers(stream.stream_id, trailers, end_stream=True)
            if not stream.remote_ended:
                # The answer is complete: the client need not send the rest (RFC 9113 8.1).
                self._h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.NO_ERROR)

    def _refuse_http(self, sid: int, status: int) -> None:
        """Not a gRPC request at all: a plain HTTP status."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.send_headers(sid, [(b":status", str(status).encode())], end_stream=True)
            self._h2.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)

    async def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    # -- the end --

    async def _end_all(self) -> None:
        tasks = [stream.task for stream in self._streams.values() if stream.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def goaway(self) -> None:
        """The server stops: every open stream gets UNAVAILABLE, then GOAWAY."""
        self._closing = True
        await self._end_all()
        for stream in list(self._streams.values()):
            self._end(stream, _Code.UNAVAILABLE, "the Workload API is shutting down")
        self._streams.clear()
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection()
        try:
            await asyncio.wait_for(self._flush(), _GOODBYE_SECONDS)
        except (ConnectionError, OSError, TimeoutError):
            self._writer.transport.abort()  # a client that does not read is not waited for
        else:
            self._writer.close()


def _response_headers() -> list[tuple[bytes, bytes]]:
    return [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-accept-encoding", b"identity"),
    ]


# -- the server ---------------------------------------------------------------------


class WorkloadApiServer:
    """The Workload API on `socket_path`, served from its own thread until stop()."""

    def __init__(self, backend: WorkloadBackend, socket_path: str) -> None:
        self._backend = backend
        self._path = socket_path
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._stopping = threading.Event()
        self._stop_requested = asyncio.Event()
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Listen (mode 0o777: any local user may ask; the answer depends on who asks)."""
        if self._thread is not None:
            raise RuntimeError("the Workload API server is already running")
        listener, inode = _listen(self._path)
        try:
            version = self._backend.version()
        except BaseException:
            listener.close()
            _unlink_if_ours(self._path, inode)
            raise
        self._listener, self._inode = listener, inode
        self._executor = ThreadPoolExecutor(_BACKEND_THREADS, thread_name_prefix="workload-api")
        hub = _Hub(self._backend, self._executor, version)
        self._loop = asyncio.new_event_loop()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(hub,), name="workload-api", daemon=True
        )
        self._watcher = threading.Thread(
            target=self._watch, args=(hub, version), name="workload-api-watch", daemon=True
        )
        self._thread.start()
        self._watcher.start()

    def stop(self) -> None:
        """End every stream (UNAVAILABLE), close every connection, remove the socket."""
        if self._thread is None or self._loop is None:
            return
        self._stopping.set()
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join()
        if self._watcher is not None:
            self._watcher.join()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        _unlink_if_ours(self._path, self._inode)
        self._thread = self._watcher = self._loop = self._executor = None
        self._listener = None
        self._stop_requested = asyncio.Event()

    # -- the loop thread --

    def _serve(self, hub: _Hub) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main(hub))
        finally:
            self._loop.close()

    async def _main(self, hub: _Hub) -> None:
        assert self._listener is not None
        accepting = asyncio.create_task(self._accept(hub, self._listener))
        await self._stop_requested.wait()
        accepting.cancel()
        self._listener.close()
        await asyncio.gather(
            accepting, *(c.goaway() for c in list(self._connections)), return_exceptions=True
        )
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=_GOODBYE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _accept(self, hub: _Hub, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError:
                log.exception("the Workload API socket could not accept")
                await asyncio.sleep(0.1)  # e.g. out of file descriptors: let some close
                continue
            if len(self._tasks) >= MAX_CONNECTIONS:
                sock.close()
                continue
            task = asyncio.create_task(self._connection(hub, sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, hub: _Hub, sock: socket.socket) -> None:
        try:
            peer = await hub.run(peer_of, sock)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError:
            sock.close()
            return
        if self._stop_requested.is_set():
            writer.close()
            return
        connection = _Connection(hub, peer, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    # -- the watcher thread --

    def _watch(self, hub: _Hub, seen: int) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stopping.is_set():
            try:
                version = self._backend.wait(seen, _WAIT_SLICE)
            except Exception:
                log.exception("the Workload API backend could not be watched")
                self._stopping.wait(1.0)
                continue
            if version > seen:
                seen = version
                try:
                    loop.call_soon_threadsafe(hub.moved, version)
                except RuntimeError:
                    return  # the loop has ended


def _listen(path: str) -> tuple[socket.socket, int]:
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o777)  # noqa: S103 - anyone may ask: the answer depends on who asks
        sock.listen(128)
        sock.setblocking(False)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return sock, inode


def _remove_stale(path: str) -> None:
    """A socket file nobody listens on is left by a server that died: remove it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"another server is listening on {path}")


def _unlink_if_ours(path: str, inode: int | None) -> None:
    """Remove the socket file unless something else has replaced it since."""
    with contextlib.suppress(FileNotFoundError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
