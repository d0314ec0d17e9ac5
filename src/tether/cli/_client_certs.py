"""Client certificates over mTLS, from the TLS handshake to the request.

uvicorn verifies a client certificate in the handshake but does not hand it to the
application. `http_protocol()` is uvicorn's own HTTP protocol with one addition: each
request's scope carries the chain the client presented, as the ASGI TLS extension
describes it (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM, leaf first).

`ClientTrust` keeps the handshake accepting what the estate's x509 issuers trust (their
CA bundles, federated SPIFFE bundles, Tether's own CA): the TLS layer only lets such a
certificate through, and `tether.attest.X509Attestor` decides, per request, against the
issuer it is evidence from. The handshake refuses an unknown root or an expired
certificate itself (the client sees TLS's `unknown ca` / `certificate expired` alert).
"""

from __future__ import annotations

import _ssl
import asyncio
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from tether.app import Tether

log = logging.getLogger("tether.serve")

Scope = MutableMapping[str, Any]

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME, which the ssl module does not name.
_NO_CHECK_TIME = 0x200000
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


def _presented_chain(transport: asyncio.BaseTransport) -> list[str] | None:
    """The chain the client sent (PEM, leaf first), or None when it sent none."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return None
    ders = [leaf]
    # The intermediates the client sent: public in Python 3.13 (get_unverified_chain),
    # on the private object before it. Without them only the leaf is known, and an
    # issuer's roots must then sign it directly.
    getter = getattr(ssl_object, "get_unverified_chain", None)
    inner = getattr(ssl_object, "_sslobj", None)
    if getter is None and inner is not None:
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
            sent = [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]
        except (ssl.SSLError, ValueError, AttributeError):
            sent = []
        if sent and sent[0] == leaf:
            ders = sent
    return [ssl.DER_cert_to_PEM_cert(der) for der in ders]


class _WithClientChain:
    """The application, with this connection's client chain in every request's scope."""

    __slots__ = ("_app", "_tls")

    def __init__(self, app: Asgi, chain: list[str]) -> None:
        self._app = app
        self._tls = {
            "server_cert": None,
            "client_cert_chain": chain,
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
        }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = self._tls
        await self._app({**scope, "extensions": extensions}, receive, send)


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, else h11) that passes client chains on."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - httptools is locked; h11 is the fallback
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class ClientChainProtocol(Base):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            chain = _presented_chain(transport)
            if chain is not None:
                # Per connection: both protocols read `self.app` for each request.
                self.app = _WithClientChain(self.app, chain)

    return ClientChainProtocol


class ClientTrust:
    """Keeps a TLS server context trusting every root of the estate's x509 issuers.

    Roots are only ever added (OpenSSL cannot remove one from a live context): a root the
    estate stopped trusting still passes the handshake, and attestation refuses it."""

    def __init__(self, node: Tether, context: ssl.SSLContext) -> None:
        self._node = node
        self._context = context
        self._lock = threading.Lock()
        self._loaded: set[bytes] = set()
        #: No --tls-client-ca: a certificate is evidence, never a gate to the port.
        self._evidence_only = context.verify_mode == ssl.CERT_NONE

    def install(self) -> None:
        node = self._node
        node.view.listeners.append(lambda _view: self.refresh())
        node.spiffe_ca.on_changed.append(lambda *_args: self.refresh())
        node.system.on_opened.append(self.refresh)
        self.refresh()

    def refresh(self, *_args: object) -> None:
        pem = self._node.x509_attestor.roots_pem()
        if not pem:
            return
        with self._lock:
            added = 0
            for cert in x509.load_pem_x509_certificates(pem.encode()):
                der = cert.public_bytes(serialization.Encoding.DER)
                if der in self._loaded:
                    continue
                self._context.load_verify_locations(cadata=der)
                self._loaded.add(der)
                added += 1
            if self._evidence_only and self._context.verify_mode == ssl.CERT_NONE:
                # Ask for a certificate; a client without one is still served. Its times
                # are checked by attestation, which can say "expired at ..." in the
                # answer; the handshake could only send an alert. (With --tls-client-ca
                # the certificate gates the port too, and the handshake checks them.)
                self._context.verify_flags |= _NO_CHECK_TIME
                self._context.verify_mode = ssl.CERT_OPTIONAL
        if added:
            log.info("trusting %d more client certificate roots (x509 issuers)", added)
