"""Settings from the environment, read once by the composition root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:8737"


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    database_url: str
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

    @property
    def issuer_url(self) -> str:
        return (self.public_url or f"http://{self.listen}").rstrip("/")

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
        )
