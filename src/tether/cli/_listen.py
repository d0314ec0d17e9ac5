"""The listener of `tether serve`/`tether dev`: settings, TLS and the socket, all checked first.

Everything here runs before the node's modules are imported or its store is opened, so a bad
flag or a busy port is one quick line and nothing has started (no migration, no state).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tether.config import Settings
from tether.errors import TetherError

ClientAuth = Literal["optional", "required"]

#: How many connections may wait while the node is still starting (migrations, unseal).
_BACKLOG = 2048


class ServeConfigError(TetherError):
    """`tether serve`/`tether dev` was asked for something it cannot or must not do."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The listener's flags; a flag given here wins over its environment variable."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: Whether a client certificate is required or only verified when presented.
    tls_client_auth: ClientAuth | None = None
    trusted_proxies: tuple[str, ...] = ()
    allow_plain_http: bool = False
    #: Migrate into a database that already holds tables that are not Tether's.
    allow_existing_schema: bool = False


@dataclass(frozen=True, slots=True)
class Listener:
    settings: Settings
    host: str
    port: int
    tls: ssl.SSLContext | None
    cert_reqs: ssl.VerifyMode = ssl.CERT_NONE
    #: Where the address came from, for errors: `--listen`, `TETHER_LISTEN` or the default.
    source: str = "--listen"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def _split_listen(listen: str, label: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServeConfigError(
            f"{label} must be HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:8737), "
            f"not {listen!r}"
        )
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; a wildcard (0.0.0.0, ::) or any other name is not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(settings: Settings, options: ServeOptions) -> Settings:
    """The environment's settings with the command line's flags laid over them."""
    overrides: dict[str, Any] = {
        "tls_cert": options.tls_cert,
        "tls_key": options.tls_key,
        "tls_client_ca": options.tls_client_ca,
        "trusted_proxies": options.trusted_proxies or None,
        "allow_plain_http": options.allow_plain_http or None,
        "allow_existing_schema": options.allow_existing_schema or None,
    }
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _label(flag: str, env: str, given: object) -> str:
    return flag if given else env


def _check_proxies(settings: Settings, options: ServeOptions) -> None:
    label = _label("--trusted-proxy", "TETHER_TRUSTED_PROXIES", options.trusted_proxies)
    for value in settings.trusted_proxies:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ServeConfigError(
                f"{label}: {value!r} is not an IP address or CIDR network (e.g. 10.0.0.5, "
                "10.0.0.0/8, fd00::/8)"
            ) from None


def _read(label: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServeConfigError(
            f"{label}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from None


@dataclass(frozen=True, slots=True)
class _TlsLabels:
    """What to call each TLS input in an error: the flag if it was given, else its variable."""

    cert: str
    key: str
    client_ca: str

    @classmethod
    def of(cls, options: ServeOptions) -> _TlsLabels:
        return cls(
            _label("--tls-cert", "TETHER_TLS_CERT", options.tls_cert),
            _label("--tls-key", "TETHER_TLS_KEY", options.tls_key),
            _label("--tls-client-ca", "TETHER_TLS_CLIENT_CA", options.tls_client_ca),
        )


def _server_context(cert: Path, key: Path, labels: _TlsLabels) -> ssl.SSLContext:
    """TLS 1.2+ with the certificate chain and key, each file checked for a clear error."""
    if b"-----BEGIN CERTIFICATE-----" not in _read(labels.cert, cert):
        raise ServeConfigError(f"{labels.cert}: {cert} holds no PEM certificate")
    key_pem = _read(labels.key, key)
    if b"PRIVATE KEY-----" not in key_pem:
        raise ServeConfigError(f"{labels.key}: {key} holds no PEM private key")
    if b"ENCRYPTED" in key_pem:
        raise ServeConfigError(
            f"{labels.key}: {key} is encrypted; give the key unencrypted (protect it with file "
            "permissions)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    try:
        # A password callback, so an encrypted key is an error rather than a tty prompt.
        context.load_cert_chain(cert, key, password=lambda: "")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ServeConfigError(
                f"{labels.key}: {key} is not the key of the certificate {cert}"
            ) from None
        raise ServeConfigError(
            f"{labels.cert}/{labels.key}: cannot load {cert} with {key}: "
            f"{exc.reason or 'not a valid PEM certificate and key'}"
        ) from None
    return context


def _verify_clients(
    context: ssl.SSLContext, client_ca: Path, auth: ClientAuth | None, label: str
) -> None:
    """mTLS: clients' certificates are verified against `client_ca`."""
    if b"-----BEGIN CERTIFICATE-----" not in _read(label, client_ca):
        raise ServeConfigError(f"{label}: {client_ca} holds no PEM CA certificate")
    try:
        context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError as exc:
        raise ServeConfigError(
            f"{label}: cannot load {client_ca}: {exc.reason or 'not a valid PEM bundle'}"
        ) from None
    required = (auth or "required") == "required"
    context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL


def _tls_context(settings: Settings, options: ServeOptions) -> ssl.SSLContext | None:
    """The server's TLS context, every file loaded now so a bad one is one clear line."""
    labels = _TlsLabels.of(options)
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is None and key is None:
        if client_ca is not None:
            raise ServeConfigError(
                f"{labels.client_ca} needs --tls-cert and --tls-key: it is for HTTPS"
            )
        if options.tls_client_auth is not None:
            raise ServeConfigError("--tls-client-auth needs --tls-client-ca (and HTTPS)")
        return None
    if cert is None or key is None:
        if cert is None:
            given, missing = labels.key, "--tls-cert (TETHER_TLS_CERT)"
        else:
            given, missing = labels.cert, "--tls-key (TETHER_TLS_KEY)"
        raise ServeConfigError(
            f"{given} needs {missing} too: HTTPS takes a certificate and its key"
        )
    context = _server_context(cert, key, labels)
    if client_ca is not None:
        _verify_clients(context, client_ca, options.tls_client_auth, labels.client_ca)
    elif options.tls_client_auth is not None:
        raise ServeConfigError("--tls-client-auth needs --tls-client-ca")
    return context


def _listen_source(listen: str | None) -> str:
    if listen is not None:
        return "--listen"
    return "TETHER_LISTEN" if os.environ.get("TETHER_LISTEN") else "the default"


def prepare(listen: str | None, dev: bool, options: ServeOptions) -> Listener:
    """Settings, TLS and the listen address, all checked before anything starts."""
    settings = _resolve(Settings.from_env(listen=listen, dev=dev), options)
    source = _listen_source(listen)
    host, port = _split_listen(settings.listen, source)
    _check_proxies(settings, options)
    context = _tls_context(settings, options)
    if context is None and not is_loopback(host) and not settings.allow_plain_http:
        raise ServeConfigError(
            f"refusing to serve plain HTTP on {settings.listen}, which is not a loopback "
            "address: credentials would cross the network in the clear. Give --tls-cert and "
            "--tls-key, listen on 127.0.0.1, or pass --allow-plain-http "
            "(TETHER_ALLOW_PLAIN_HTTP=1) behind a TLS-terminating proxy"
        )
    return Listener(
        settings, host, port, context, context.verify_mode if context else ssl.CERT_NONE, source
    )


def bind(listener: Listener) -> socket.socket:
    """The listening socket, bound before the store is opened: a busy or wrong address is
    refused before anything has started, and "Serving on" is printed only once it is ours."""
    where = f"{listener.settings.listen} ({listener.source})"
    hint = "choose another address with --listen HOST:PORT or TETHER_LISTEN"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServeConfigError(f"cannot listen on {where}: {exc.strerror}; {hint}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ServeConfigError(f"cannot listen on {where}: {reason}; {hint}") from None
    return sock
