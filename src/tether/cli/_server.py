"""Running a Tether node in this process: `tether serve` and `tether dev`.

Everything is checked (`prepare`) before the node's modules are even imported, so a bad
flag is one quick line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import ipaddress
import logging
import os
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import uvicorn
from rich.console import Console

from tether._internal.logs import configure_logging
from tether._internal.timeutil import format_time
from tether.config import Settings
from tether.errors import TetherError
from tether.estate import load_estate_file, parse_estate
from tether.store import IdentityFilter

if TYPE_CHECKING:
    from tether.app import Tether

log = logging.getLogger(__name__)

ClientAuth = Literal["optional", "required"]


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


@dataclass(frozen=True, slots=True)
class Listener:
    settings: Settings
    host: str
    port: int
    tls: ssl.SSLContext | None
    cert_reqs: ssl.VerifyMode = ssl.CERT_NONE

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ServeConfigError(f"--listen must be host:port, not {listen!r}")
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


def _tls_context(settings: Settings, options: ServeOptions) -> ssl.SSLContext | None:
    """The server's TLS context, every file loaded now so a bad one is one clear line."""
    cert_label = _label("--tls-cert", "TETHER_TLS_CERT", options.tls_cert)
    key_label = _label("--tls-key", "TETHER_TLS_KEY", options.tls_key)
    ca_label = _label("--tls-client-ca", "TETHER_TLS_CLIENT_CA", options.tls_client_ca)
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is None and key is None:
        if client_ca is not None:
            raise ServeConfigError(f"{ca_label} needs --tls-cert and --tls-key: it is for HTTPS")
        if options.tls_client_auth is not None:
            raise ServeConfigError("--tls-client-auth needs --tls-client-ca (and HTTPS)")
        return None
    if cert is None or key is None:
        if cert is None:
            given, missing = key_label, "--tls-cert (TETHER_TLS_CERT)"
        else:
            given, missing = cert_label, "--tls-key (TETHER_TLS_KEY)"
        raise ServeConfigError(
            f"{given} needs {missing} too: HTTPS takes a certificate and its key"
        )
    if b"-----BEGIN CERTIFICATE-----" not in _read(cert_label, cert):
        raise ServeConfigError(f"{cert_label}: {cert} holds no PEM certificate")
    key_pem = _read(key_label, key)
    if b"PRIVATE KEY-----" not in key_pem:
        raise ServeConfigError(f"{key_label}: {key} holds no PEM private key")
    if b"ENCRYPTED" in key_pem:
        raise ServeConfigError(
            f"{key_label}: {key} is encrypted; give the key unencrypted (protect it with file "
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
                f"{key_label}: {key} is not the key of the certificate {cert}"
            ) from None
        raise ServeConfigError(
            f"{cert_label}/{key_label}: cannot load {cert} with {key}: "
            f"{exc.reason or 'not a valid PEM certificate and key'}"
        ) from None
    if client_ca is not None:
        if b"-----BEGIN CERTIFICATE-----" not in _read(ca_label, client_ca):
            raise ServeConfigError(f"{ca_label}: {client_ca} holds no PEM CA certificate")
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ServeConfigError(
                f"{ca_label}: cannot load {client_ca}: {exc.reason or 'not a valid PEM bundle'}"
            ) from None
        required = (options.tls_client_auth or "required") == "required"
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    elif options.tls_client_auth is not None:
        raise ServeConfigError("--tls-client-auth needs --tls-client-ca")
    return context


def prepare(listen: str | None, dev: bool, options: ServeOptions) -> Listener:
    """Settings, TLS and the listen address, all checked before anything starts."""
    settings = _resolve(Settings.from_env(listen=listen, dev=dev), options)
    host, port = _split_listen(settings.listen)
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
        settings, host, port, context, context.verify_mode if context else ssl.CERT_NONE
    )


def _uvicorn_tls(listener: Listener) -> dict[str, Any]:
    settings, context = listener.settings, listener.tls
    if context is None:
        return {}
    kwargs: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
        "ssl_ca_certs": str(settings.tls_client_ca) if settings.tls_client_ca else None,
        "ssl_cert_reqs": int(listener.cert_reqs),
    }
    if "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters:  # uvicorn 0.47+

        def factory(_config: object, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return context

        kwargs["ssl_context_factory"] = factory
    return kwargs


def _serve(node: Tether, listener: Listener) -> None:
    from tether.api import create_app

    if listener.tls is None and not is_loopback(listener.host):
        log.warning(
            "serving plain HTTP on a non-loopback address (allowed by --allow-plain-http)",
            extra={"listen": node.settings.listen},
        )
    try:
        uvicorn.run(
            create_app(node),
            host=listener.host,
            port=listener.port,
            log_config=None,
            access_log=False,
            server_header=False,
            # The client address is the TCP peer's unless Tether itself trusts the proxy
            # (Settings.trusted_proxies): uvicorn must never rewrite it from headers.
            proxy_headers=False,
            forwarded_allow_ips="",
            **_uvicorn_tls(listener),
        )
    finally:
        node.stop()


def run_server(listen: str | None, dev: bool, options: ServeOptions | None = None) -> None:
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "INFO"))
    listener = prepare(listen, dev, options or ServeOptions())
    from tether.app import Tether

    node = Tether(listener.settings)
    node.start()
    _serve(node, listener)


def _show_core_loop(node: Tether, console: Console) -> None:
    """One pass of the core loop, in process, printed step by step."""
    from tether.issuance import ExchangeRequest, IssuanceError
    from tether.providers import ACCESS_TOKEN_TYPE

    identity = node.view.current.identities.get("payments-deployer")
    audience = "https://orders.example.com"
    if identity is None or "orders-api-read" not in {e.profile_id for e in identity.entitlements}:
        return
    console.print(
        "\n[bold]The core loop[/] (payments-deployer, attested by a one-time join token):"
    )
    join, _ = node.issuance.create_join_token(identity.id, dt.timedelta(minutes=5), "dev-mode")
    started = node.issuance.start_task(join, "demo-deploy", dt.timedelta(minutes=10), None)
    console.print(
        f"  1. task {started.task.id} started; it ends by {format_time(started.task.ends_at)}"
    )
    issued = node.issuance.exchange(
        ExchangeRequest(
            subject_token=started.token, subject_token_type=ACCESS_TOKEN_TYPE, audience=audience
        )
    )
    console.print(
        f"  2. policy allowed a JWT for {audience}: lease {issued.lease_id}, "
        f"scope {' '.join(issued.scope)}, {issued.expires_in}s (bounded by "
        f"{issued.bounded_by})"
    )
    try:
        node.issuance.exchange(
            ExchangeRequest(
                subject_token=started.token,
                subject_token_type=ACCESS_TOKEN_TYPE,
                audience="opaque-api",
            )
        )
    except IssuanceError as exc:
        console.print(f"  3. a profile it is not entitled to was refused: {exc}")
    active = node.issuance.introspect(issued.access_token)["active"]
    console.print(f"  4. introspection: active={active}")
    revoked = node.leases.end_task(started.task, "demo finished", "dev-mode")
    active = node.issuance.introspect(issued.access_token)["active"]
    console.print(f"  5. task ended: {revoked} lease(s) revoked; introspection: active={active}")


def run_dev(
    listen: str | None,
    estate_file: Path,
    once: bool,
    console: Console,
    options: ServeOptions | None = None,
) -> None:
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "WARNING"))
    listener = prepare(listen, True, options or ServeOptions())
    settings = listener.settings
    from tether.app import Tether

    node = Tether(settings)
    node.start()
    status = node.barrier.status()
    console.print(f"[bold]Tether dev mode[/] — home {settings.home}")
    console.print(f"  storage:  {settings.database_url.split('?')[0]}")
    console.print(
        f"  barrier:  initialized, {'sealed' if status.sealed else 'unsealed'} "
        f"(dev key file {settings.dev_key_file}, mode 600), keyring term {status.term}"
    )
    document = load_estate_file(estate_file)
    plan = node.estate.apply(parse_estate(document), actor="dev-mode", document=document)
    counts = ", ".join(f"{n} {a}d" for a, n in plan.counts().items() if n) or "no changes"
    console.print(f"  estate:   applied {estate_file.name}: {counts}")
    identities = node.estate.list_identities(IdentityFilter(status="active", limit=100_000))
    by_kind = Counter(i.kind.value for i in identities)
    console.print(
        f"  inventory: {len(identities)} active identities — "
        + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
    )
    node.view.reload()
    _show_core_loop(node, console)
    verification = node.verify_audit()
    console.print(
        f"\n  audit:    {verification.entries} entries, chain "
        f"{'verified' if verification.ok else 'BROKEN: ' + str(verification.problem)}"
    )
    console.print("\nUse the CLI against it:")
    console.print(f"  export TETHER_ADDR={listener.url}", markup=False)
    if listener.tls is not None:
        console.print(
            f"  export TETHER_CACERT=...   # the CA bundle that signed {settings.tls_cert}",
            markup=False,
        )
    console.print(f"  export TETHER_TOKEN=$(cat {settings.dev_token_file})")
    console.print("  tether identity list")
    console.print("  tether audit verify")
    if once:
        node.stop()
        return
    console.print(f"\nServing on {listener.url} (Ctrl-C to stop)", markup=False)
    _serve(node, listener)
