"""Settings from the environment, read once by the composition root."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:8737"


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    database_url: str = field(repr=False)  # it may carry a password
    listen: str = DEFAULT_LISTEN
    dev: bool = False
    #: The URL clients reach this node at: the `iss` of the tokens it signs.
    public_url: str = ""
    #: How often the lifecycle worker sweeps (seconds); triggers also wake it at once.
    sweep_interval: float = 0.25
    #: A lease still `pending` this long was interrupted by a crash: recovery revokes it.
    pending_grace: float = 60.0
    #: How often target systems are reconciled against live leases (seconds).
    reconcile_interval: float = 60.0
    #: How often governance flushes usage and, on the leader, evaluates what changed
    #: (seconds); the whole estate is evaluated every `governance.evaluate_every`.
    governance_interval: float = 2.0
    #: How often target sessions are sampled for usage evidence (seconds).
    session_sample_interval: float = 30.0
    #: Peers (addresses or CIDR networks) whose `X-Forwarded-For`/`Forwarded` headers are
    #: believed. None by default: the client address is the TCP peer's.
    trusted_proxies: tuple[str, ...] = ()
    #: HTTPS: the server's certificate chain and key (PEM), and optionally a CA whose
    #: client certificates are verified.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy).
    allow_plain_http: bool = False
    #: Migrate into a database that already holds tables that are not Tether's.
    allow_existing_schema: bool = False
    #: A file only its owner can read holding enough unseal shares, one a line: the node
    #: unseals itself from it at start (each node of a cluster, with no one at hand).
    unseal_key_file: Path | None = None
    #: GitHub's secret scanning public keys (the JSON of its meta API), which verify the
    #: partner alerts POST /v1/exposures takes. None: such alerts are refused.
    github_scanning_keys: Path | None = None
    #: Where the SPIFFE Workload API listens (a Unix socket path); None: it does not.
    spiffe_socket: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def issuer_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return (self.public_url or f"{scheme}://{self.listen}").rstrip("/")

    @property
    def dev_key_file(self) -> Path:
        return self.home / "dev-unseal.key"

    @property
    def dev_token_file(self) -> Path:
        return self.home / "dev-root-token"

    @classmethod
    def from_env(cls, listen: str | None = None, dev: bool = False) -> Settings:
        home = Path(os.environ.get("TETHER_HOME", ".tether")).resolve()
        url = os.environ.get("TETHER_DATABASE_URL") or f"sqlite:///{home / 'tether.db'}"
        return cls(
            home=home,
            database_url=url,
            listen=listen or os.environ.get("TETHER_LISTEN", DEFAULT_LISTEN),
            dev=dev,
            public_url=os.environ.get("TETHER_PUBLIC_URL", ""),
            pending_grace=float(os.environ.get("TETHER_PENDING_GRACE", "60")),
            reconcile_interval=float(os.environ.get("TETHER_RECONCILE_INTERVAL", "60")),
            governance_interval=float(os.environ.get("TETHER_GOVERNANCE_INTERVAL", "2")),
            session_sample_interval=float(os.environ.get("TETHER_SESSION_SAMPLE_INTERVAL", "30")),
            trusted_proxies=_list(os.environ.get("TETHER_TRUSTED_PROXIES", "")),
            tls_cert=_path(os.environ.get("TETHER_TLS_CERT")),
            tls_key=_path(os.environ.get("TETHER_TLS_KEY")),
            tls_client_ca=_path(os.environ.get("TETHER_TLS_CLIENT_CA")),
            allow_plain_http=_flag("TETHER_ALLOW_PLAIN_HTTP"),
            allow_existing_schema=_flag("TETHER_ALLOW_EXISTING_SCHEMA"),
            unseal_key_file=_path(os.environ.get("TETHER_UNSEAL_KEY_FILE")),
            github_scanning_keys=_path(os.environ.get("TETHER_GITHUB_SCANNING_KEYS")),
            spiffe_socket=_path(os.environ.get("TETHER_SPIFFE_SOCKET")),
        )


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
