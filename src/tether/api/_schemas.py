"""Request and response bodies at the HTTP edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InitRequest(_Body):
    shares: int = Field(default=5, ge=1, le=255)
    threshold: int = Field(default=3, ge=1, le=255)


class InitResponse(BaseModel):
    shares: list[str]
    root_token: str


class UnsealRequest(_Body):
    share: str = Field(min_length=1, max_length=128)


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
    roles: list[str] = Field(min_length=1, max_length=20)
    ttl: str | None = Field(default=None, max_length=40)


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
    value: str = Field(min_length=1, max_length=65536)


class ErrorBody(BaseModel):
    error: str
    message: str
    problems: list[dict[str, str]] | None = None
