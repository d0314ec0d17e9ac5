"""Request and response bodies at the HTTP edge."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tether.auth import ROLE_PATTERN

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
