from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tether.config import DEFAULT_LISTEN
from tether.errors import TetherError


class ClientError(TetherError):
    """An API call failed. `problems` lists field errors when the server named them."""

    def __init__(
        self,
        message: str,
        status: int = 0,
        code: str = "client_error",
        problems: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.problems = problems or []


class TetherClient:
    """A client of the Tether API at `addr` (default `TETHER_ADDR`).

    HTTPS is verified against `cacert` (default `TETHER_CACERT`, a PEM bundle or a
    directory of them), else the system trust store. `client_cert` and `client_key`
    (default `TETHER_CLIENT_CERT`, `TETHER_CLIENT_KEY`) present a certificate for mTLS.
    """

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        cacert: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
    ) -> None:
        self.addr = (addr or os.environ.get("TETHER_ADDR") or f"http://{DEFAULT_LISTEN}").rstrip(
            "/"
        )
        if "://" not in self.addr:
            self.addr = "http://" + self.addr
        self._token = token if token is not None else os.environ.get("TETHER_TOKEN")
        headers = {"user-agent": "tether-client"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        verify: ssl.SSLContext | bool = True
        if client_cert is None:
            client_cert = os.environ.get("TETHER_CLIENT_CERT")
        self._client_cert = bool(client_cert and str(client_cert))
        if self.addr.lower().startswith("https://"):
            verify = tls_context(
                cacert if cacert is not None else os.environ.get("TETHER_CACERT"),
                client_cert,
                client_key if client_key is not None else os.environ.get("TETHER_CLIENT_KEY"),
            )
        self._http = httpx.Client(
            base_url=self.addr, headers=headers, timeout=timeout, verify=verify
        )

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"TetherClient(addr={self.addr!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TetherClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def text(self, path: str, **params: Any) -> str:
        """A GET whose answer is a document (an HTML report), not JSON."""
        given = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request("GET", path, params=given)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response.text

    def stream_lines(self, path: str) -> Iterator[str]:
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def _transport_error(self, exc: httpx.HTTPError) -> ClientError:
        """One clear sentence for a failure below HTTP: never a traceback."""
        https = self.addr.lower().startswith("https://")
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "certificate verify failed"
            hint = (
                "TETHER_ADDR must use a name or address the certificate names"
                if "mismatch" in reason.lower()
                else "set TETHER_CACERT to the CA that signed the server's certificate"
            )
            return ClientError(f"TLS verification of {self.addr} failed: {reason} ({hint})")
        if https and (
            isinstance(cause, ssl.SSLEOFError)
            or (cause is None and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError))
        ):
            # A server that refuses a client certificate just closes the connection (under
            # TLS 1.3 after the client thinks the handshake is done).
            hint = (
                "it may not accept the client certificate (TETHER_CLIENT_CERT)"
                if self._client_cert
                else "if it requires a client certificate, set TETHER_CLIENT_CERT and "
                "TETHER_CLIENT_KEY"
            )
            return ClientError(
                f"TLS connection to {self.addr} failed: the server closed it ({hint})"
            )
        if cause is not None:
            reason = cause.reason or type(cause).__name__
            hint = ""
            if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
                hint = " (is the server speaking plain HTTP? then use an http:// TETHER_ADDR)"
            elif "ALERT" in reason:
                hint = " (the server refused the TLS handshake)"
            return ClientError(f"TLS connection to {self.addr} failed: {reason}{hint}")
        if isinstance(exc, httpx.ConnectError):
            return ClientError(
                f"cannot reach Tether at {self.addr}: is `tether serve` (or `tether dev`) running?"
            )
        hint = ""
        if not https and isinstance(exc, httpx.RemoteProtocolError):
            hint = " (if the server serves HTTPS, use an https:// TETHER_ADDR)"
        return ClientError(f"request to {self.addr} failed: {type(exc).__name__}{hint}")

    # -- convenience --
    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=params or None)


def _error_from(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
        message = body.get("message") or body.get("error_description") or body.get("error")
        return ClientError(
            str(message),
            response.status_code,
            str(body.get("error", "error")),
            body.get("problems"),
        )
    except ValueError:
        return ClientError(f"HTTP {response.status_code} from server", response.status_code)


def tls_context(
    cacert: str | os.PathLike[str] | None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A verifying client context: `cacert` (PEM file or directory) or the system store."""
    try:
        if cacert is None or not str(cacert):
            context = ssl.create_default_context()
        elif Path(cacert).is_dir():
            context = ssl.create_default_context(capath=cacert)
        else:
            context = ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ClientError(
            f"cannot load the CA bundle {cacert} (TETHER_CACERT): {_why(exc)}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None and str(client_cert):
        try:
            context.load_cert_chain(client_cert, client_key or None, password=lambda: "")
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(
                f"cannot load the client certificate {client_cert} (TETHER_CLIENT_CERT) "
                f"with key {client_key or client_cert} (TETHER_CLIENT_KEY): {_why(exc)}"
            ) from None
    elif client_key is not None and str(client_key):
        raise ClientError("TETHER_CLIENT_KEY is set but TETHER_CLIENT_CERT is not")
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "not valid PEM")
    return exc.strerror or type(exc).__name__


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error (httpx → httpcore → ssl), if any."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
