"""The workload SDK: attest once per task, get short-lived credentials, end the task.

    client = WorkloadClient.from_env()  # TETHER_ADDR, TETHER_ATTESTATION_TOKEN(_FILE)
    with client.task("deploy-42") as task:
        token = task.token(audience="https://orders.example.com")

Leaving the block ends the task, so everything issued in it is revoked. `task.token()`
returns a cached credential until half its life has passed, then asks again (and policy
decides again).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from tether.client._http import ClientError, TetherClient
from tether.client._keys import KeyClient

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URI
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URI
JWT = "urn:ietf:params:oauth:token-type:jwt"


#: Where an attestation comes from: the token itself, or a callable asked on every use.
Attestation = str | Callable[[], str]


class ExchangeOptions(TypedDict, total=False):
    """What an RFC 8693 exchange may ask for besides the subject token; None means unset."""

    audience: str | None
    resource: str | None
    scope: str | None
    ttl: str | None
    actor_token: str | None
    actor_token_type: str | None
    task: str | None
    intent: str | None


def attestation_from_env(file: str | os.PathLike[str] | None = None) -> Attestation | None:
    """The attestation this environment gives a workload: the token in `file` (default
    TETHER_ATTESTATION_TOKEN_FILE, e.g. a projected Kubernetes token or a join token saved
    by `tether join-token create`), re-read on every use so a rotated token is picked up;
    else TETHER_ATTESTATION_TOKEN."""
    path = file or os.environ.get("TETHER_ATTESTATION_TOKEN_FILE")
    if not path:
        return os.environ.get("TETHER_ATTESTATION_TOKEN")

    def read() -> str:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(
                f"cannot read the attestation token file {path}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None

    return read


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    issued_token_type: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    scope: tuple[str, ...]
    lease_id: str

    def __repr__(self) -> str:  # never print the credential
        return f"IssuedToken(lease_id={self.lease_id!r}, expires_at={self.expires_at.isoformat()})"

    def past_half_life(self, now: dt.datetime | None = None) -> bool:
        now = now or _now()
        return now >= self.issued_at + (self.expires_at - self.issued_at) / 2


@dataclass(frozen=True, slots=True)
class AgentRunAsk:
    """An agent run's declaration: its intent (within the identity's intent_schema), the
    principal's proof (a person's token, or an identity's Tether token) and its window."""

    purpose: str
    tools: tuple[str, ...]
    resources: tuple[str, ...] = ()
    data_classes: tuple[str, ...] = ()
    acting_for: str | None = field(default=None, repr=False)
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    max_credentials: int | None = None
    max_audiences: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "intent": {
                "purpose": self.purpose,
                "tools": list(self.tools),
                "resources": list(self.resources),
                "data_classes": list(self.data_classes),
            }
        }
        if self.acting_for is not None:
            body["acting_for"] = {"token": self.acting_for}
        window = {
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "max_credentials": self.max_credentials,
            "max_audiences": self.max_audiences,
        }
        if any(v is not None for v in window.values()):
            body["window"] = {k: v for k, v in window.items() if v is not None}
        return body


class WorkloadClient:
    def __init__(
        self,
        addr: str | None = None,
        attestation: Attestation | None = None,
        timeout: float = 30.0,
        *,
        cacert: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
    ) -> None:
        """`addr` defaults to TETHER_ADDR; HTTPS is verified against `cacert` (default
        TETHER_CACERT) or the system trust store; `client_cert`/`client_key` (default
        TETHER_CLIENT_CERT/TETHER_CLIENT_KEY) are presented for mTLS."""
        self._api = TetherClient(
            addr=addr,
            token="",
            timeout=timeout,
            cacert=cacert,
            client_cert=client_cert,
            client_key=client_key,
        )
        self._attestation = attestation

    @classmethod
    def from_env(cls) -> WorkloadClient:
        """A client configured by the environment alone: TETHER_ADDR (and TETHER_CACERT,
        TETHER_CLIENT_CERT/KEY for HTTPS), and the attestation `attestation_from_env` finds
        (TETHER_ATTESTATION_TOKEN_FILE, else TETHER_ATTESTATION_TOKEN)."""
        return cls(attestation=attestation_from_env())

    def __repr__(self) -> str:
        return f"WorkloadClient(addr={self._api.addr!r})"

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> WorkloadClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _attestation_token(self) -> str:
        value = self._attestation() if callable(self._attestation) else self._attestation
        if not value:
            raise ClientError(
                "no attestation token: pass attestation= or set TETHER_ATTESTATION_TOKEN(_FILE)"
            )
        return value

    def _post_form(self, path: str, form: dict[str, str], bearer: str | None = None) -> Any:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        return self._api.request("POST", path, data=form, headers=headers)

    # -- tasks --
    def start_task(self, name: str, ttl: str = "1h", run: AgentRunAsk | None = None) -> Task:
        """Attest and start a task; with `run`, an agent run (its intent, the principal it
        acts for, its window)."""
        body = self._api.request(
            "POST",
            "/v1/tasks",
            json={"name": name, "ttl": ttl, **(run.to_json() if run is not None else {})},
            headers={"authorization": f"Bearer {self._attestation_token()}"},
        )
        return Task(
            self,
            body["id"],
            body["token"],
            dt.datetime.fromisoformat(body["ends_at"].replace("Z", "+00:00")),
        )

    @contextmanager
    def task(self, name: str, ttl: str = "1h", run: AgentRunAsk | None = None) -> Iterator[Task]:
        task = self.start_task(name, ttl, run)
        try:
            yield task
        finally:
            task.end()

    # -- OAuth --
    def exchange(
        self,
        subject_token: str,
        subject_token_type: str = ACCESS_TOKEN,
        **options: Unpack[ExchangeOptions],
    ) -> IssuedToken:
        """RFC 8693: the subject token for a credential; `options` choose the profile
        (audience, resource, scope), shorten it (ttl) or record delegation (actor_token)."""
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": subject_token_type,
        }
        form.update({k: v for k, v in options.items() if isinstance(v, str)})
        issued_at = _now()
        body = self._post_form("/oauth2/token", form)
        return IssuedToken(
            access_token=body["access_token"],
            issued_token_type=body["issued_token_type"],
            issued_at=issued_at,
            expires_at=issued_at + dt.timedelta(seconds=body["expires_in"]),
            scope=tuple(body.get("scope", "").split()),
            lease_id=body["tether_lease"],
        )

    def exchange_attestation(self, **options: Unpack[ExchangeOptions]) -> IssuedToken:
        """A credential straight from attestation (its implicit task ends with the evidence)."""
        return self.exchange(self._attestation_token(), JWT, **options)

    def introspect(self, token: str, auth_token: str) -> dict[str, Any]:
        return dict(self._post_form("/oauth2/introspect", {"token": token}, bearer=auth_token))

    def revoke(self, token: str) -> None:
        self._post_form("/oauth2/revoke", {"token": token})


class Task:
    """A started task. Its token stands for the attested workload until the task ends."""

    def __init__(self, client: WorkloadClient, task_id: str, token: str, ends_at: dt.datetime):
        self.id = task_id
        self.ends_at = ends_at
        self._client = client
        self._token = token
        self._cache: dict[tuple[Any, ...], IssuedToken] = {}
        self._lock = threading.Lock()
        self.ended = False

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, ends_at={self.ends_at.isoformat()})"

    @property
    def task_token(self) -> str:
        return self._token

    @property
    def keys(self) -> KeyClient:
        """The task's uses of confidentiality keys (encrypt, decrypt, rewrap, datakey,
        sign, verify, hmac), each decided by policy on the server."""
        return KeyClient(self._client._api, self._token)

    def issue(
        self,
        *,
        audience: str | None = None,
        resource: str | None = None,
        scope: str | None = None,
        ttl: str | None = None,
        actor_token: str | None = None,
        intent: str | None = None,
    ) -> IssuedToken:
        return self._client.exchange(
            self._token,
            ACCESS_TOKEN,
            audience=audience,
            resource=resource,
            scope=scope,
            ttl=ttl,
            actor_token=actor_token,
            actor_token_type=ACCESS_TOKEN if actor_token else None,
            intent=intent,
        )

    def token(
        self,
        *,
        audience: str | None = None,
        resource: str | None = None,
        scope: str | None = None,
        ttl: str | None = None,
    ) -> str:
        """A credential for the audience, renewed once half its life has passed."""
        key = (audience, resource, scope, ttl)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None or cached.past_half_life():
                cached = self._cache[key] = self.issue(
                    audience=audience, resource=resource, scope=scope, ttl=ttl
                )
            return cached.access_token

    def end(self) -> None:
        """End the task: everything issued under it is revoked, sessions included."""
        if self.ended:
            return
        try:
            self._client._api.request(
                "POST",
                f"/v1/tasks/{self.id}/end",
                headers={"authorization": f"Bearer {self._token}"},
            )
        finally:
            self._cache.clear()
        self.ended = True
