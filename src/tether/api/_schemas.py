"""Request and response bodies at the HTTP edge: the pydantic models a route declares, and
the JSON a route answers with for each object of the model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tether._internal.timeutil import format_time
from tether.auth import ROLE_PATTERN
from tether.model import Lease, Task
from tether.static import StaticCredential
from tether.store import ApiTokenRecord
from tether.targets import kind_names, static_kinds

#: A duration as Tether writes it (`90s`, `15m`, `1h30m`, `30d`, `2w`), longer than zero.
DURATION_PATTERN = r"^(?=.*[1-9])([0-9]{1,9}[smhdw])+$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


class InitRequest(_Body):
    shares: int = Field(default=5, ge=1, le=255)
    threshold: int = Field(default=3, ge=1, le=255)


class InitResponse(BaseModel):
    shares: list[str]
    root_token: str


class UnsealRequest(_Body):
    # 33 bytes (the x coordinate and 32 of the root key) in base64.
    share: str = Field(pattern=r"^[A-Za-z0-9+/]{44}$", repr=False)


class StatusResponse(BaseModel):
    initialized: bool
    sealed: bool
    shares: int | None
    threshold: int | None
    progress: int
    term: int | None
    dev: bool


class RotateResponse(BaseModel):
    term: int


class TokenCreateRequest(_Body):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    roles: list[Annotated[str, Field(pattern=ROLE_PATTERN)]] = Field(min_length=1, max_length=20)
    ttl: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)


class TokenInfo(BaseModel):
    id: str
    name: str
    roles: list[str]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None


class TokenCreateResponse(TokenInfo):
    token: str


class HmacRequest(_Body):
    value: str = Field(min_length=1, max_length=4096, repr=False)


class ErrorBody(BaseModel):
    error: str
    message: str
    problems: list[dict[str, str]] | None = None


_NAMES = Field(default=(), max_length=200)


class Intent(_Body):
    """An agent run's declared intent, within its identity's intent_schema."""

    purpose: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")
    tools: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = _NAMES
    resources: tuple[Annotated[str, Field(min_length=1, max_length=2048)], ...] = _NAMES
    data_classes: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = _NAMES


class ActingFor(_Body):
    """The proof of the principal a run acts for: a person's token from a trusted
    issuer, or an identity's Tether token."""

    token: str = Field(min_length=1, max_length=16384, repr=False)


class Window(_Body):
    """An agent run's execution window (RFC 3339 times)."""

    start: str | None = Field(default=None, max_length=40)
    end: str | None = Field(default=None, max_length=40)
    max_credentials: int | None = Field(default=None, ge=1, le=1_000_000)
    max_audiences: int | None = Field(default=None, ge=1, le=10_000)


class TaskStartRequest(_Body):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    ttl: str = Field(default="1h", max_length=40, pattern=DURATION_PATTERN)
    #: An agent run: its intent, whom it acts for and its window (all optional but
    #: `intent`, which makes the task a run).
    intent: Intent | None = None
    acting_for: ActingFor | None = None
    window: Window | None = None


class RevokeRequest(_Body):
    lease: str | None = Field(default=None, max_length=64)
    task: str | None = Field(default=None, max_length=64)
    identity: str | None = Field(default=None, max_length=255)
    owner: str | None = Field(default=None, max_length=255)
    all: bool = False
    reason: str = Field(default="revoked by an operator", min_length=1, max_length=500)


class TargetAddRequest(_Body):
    name: str = Field(min_length=1, max_length=128)
    kind: str = Field(pattern=f"^({'|'.join(kind_names())})$")
    dsn: str = Field(min_length=1, max_length=4096, repr=False)


class CredsRequest(_Body):
    task: str | None = Field(default=None, max_length=64)
    ttl: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)
    intent: str | None = Field(default=None, max_length=500)


class CredentialCreateRequest(_Body):
    id: str = Field(min_length=1, max_length=128)
    kind: str = Field(default="static", pattern=f"^({'|'.join(('static', *static_kinds()))})$")
    owner: str = Field(min_length=1, max_length=255)
    readers: list[str] = Field(min_length=1, max_length=100)
    overlap: str = Field(default="1h", max_length=40, pattern=DURATION_PATTERN)
    rotate_every: str | None = Field(default="30d", max_length=40, pattern=DURATION_PATTERN)
    target: str | None = Field(default=None, max_length=128)
    users: tuple[str, str] | None = None
    grant_from: str | None = Field(default=None, max_length=63)
    value: str | None = Field(default=None, min_length=16, max_length=4096, repr=False)


class RotateRequest(_Body):
    overlap: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)


class ExposedRequest(_Body):
    evidence: str = Field(min_length=1, max_length=2000)


class VerifyRequest(_Body):
    secret: str = Field(min_length=1, max_length=4096, repr=False)
    caller: str = Field(min_length=1, max_length=255)


class RenewRequest(_Body):
    ttl: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)


class JoinTokenRequest(_Body):
    identity: str = Field(min_length=1, max_length=255)
    ttl: str = Field(default="1h", max_length=40, pattern=DURATION_PATTERN)


# -- the JSON of the model's objects --


def _time_or_none(value: Any) -> str | None:
    return None if value is None else format_time(value)


def token_info(record: ApiTokenRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "roles": list(record.roles),
        "created_at": format_time(record.created_at),
        "created_by": record.created_by,
        "expires_at": _time_or_none(record.expires_at),
        "revoked_at": _time_or_none(record.revoked_at),
    }


def task_json(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "identity": task.identity_id,
        "name": task.name,
        "status": task.status.value,
        "created_at": format_time(task.created_at),
        "deadline": format_time(task.deadline),
        "ends_at": format_time(task.ends_at),
        "ended_at": _time_or_none(task.ended_at),
        "end_reason": task.end_reason,
        "implicit": task.implicit,
        "issuer": task.issuer_id,
        **({} if task.run is None else {"run": task.run.to_spec()}),
    }


def lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "id": lease.id,
        "identity": lease.identity_id,
        "owner": lease.owner_id,
        "provider": lease.provider,
        "profile": lease.profile_id,
        "task": lease.task_id,
        "parent": lease.parent_id,
        "scopes": list(lease.scopes),
        "audience": lease.audience,
        "state": lease.state.value,
        "issued_at": format_time(lease.issued_at),
        "expires_at": format_time(lease.expires_at),
        "actor": lease.actor,
        "delegation": list(lease.delegation),
        "revoke_attempts": lease.revoke_attempts,
        "ended_at": _time_or_none(lease.ended_at),
        "end_reason": lease.end_reason,
    }


def credential_json(credential: StaticCredential) -> dict[str, Any]:
    """A static credential's metadata; version fingerprints stay inside."""
    spec = credential.to_spec()
    for version in spec["versions"]:
        version.pop("fingerprint", None)
    return spec


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page of a listing: `next` is the cursor of the following page, if there may be one."""
    return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}
