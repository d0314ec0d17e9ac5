"""Static credentials and their versions: what is stored (never a secret value)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_duration, format_time, parse_duration, parse_time


@dataclass(frozen=True, slots=True)
class SecretVersion:
    number: int
    #: current | previous (valid until the overlap ends) | retired | failed
    state: str
    created_at: dt.datetime
    fingerprint: str
    details: Mapping[str, str] = field(default_factory=dict)
    promoted_at: dt.datetime | None = None
    overlap_ends_at: dt.datetime | None = None
    retired_at: dt.datetime | None = None

    def to_spec(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "created_at": format_time(self.created_at),
            "fingerprint": self.fingerprint,
            "details": dict(self.details),
            "promoted_at": None if self.promoted_at is None else format_time(self.promoted_at),
            "overlap_ends_at": None
            if self.overlap_ends_at is None
            else format_time(self.overlap_ends_at),
            "retired_at": None if self.retired_at is None else format_time(self.retired_at),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SecretVersion:
        def t(name: str) -> dt.datetime | None:
            return None if spec.get(name) is None else parse_time(spec[name])

        created = t("created_at")
        assert created is not None
        return cls(
            number=spec["number"],
            state=spec["state"],
            created_at=created,
            fingerprint=spec["fingerprint"],
            details=dict(spec.get("details", {})),
            promoted_at=t("promoted_at"),
            overlap_ends_at=t("overlap_ends_at"),
            retired_at=t("retired_at"),
        )


@dataclass(frozen=True, slots=True)
class StaticCredential:
    """A long-lived secret some system insists on, bound to the identities that may read it."""

    id: str
    kind: str  # static (VaultOnly), or one a target kind serves (tether.targets)
    owner_id: str
    readers: tuple[str, ...]
    overlap: dt.timedelta
    rotate_every: dt.timedelta | None
    last_rotated_at: dt.datetime
    target: str | None = None
    users: tuple[str, str] | None = None
    grant_from: str | None = None
    versions: tuple[SecretVersion, ...] = ()

    @property
    def current(self) -> SecretVersion:
        return next(v for v in self.versions if v.state == "current")

    def to_spec(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "owner": self.owner_id,
            "readers": list(self.readers),
            "overlap": format_duration(self.overlap),
            "rotate_every": None
            if self.rotate_every is None
            else format_duration(self.rotate_every),
            "last_rotated_at": format_time(self.last_rotated_at),
            "target": self.target,
            "users": None if self.users is None else list(self.users),
            "grant_from": self.grant_from,
            "versions": [v.to_spec() for v in self.versions],
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> StaticCredential:
        users = spec.get("users")
        return cls(
            id=spec["id"],
            kind=spec["kind"],
            owner_id=spec["owner"],
            readers=tuple(spec["readers"]),
            overlap=parse_duration(spec["overlap"]),
            rotate_every=None
            if spec.get("rotate_every") is None
            else parse_duration(spec["rotate_every"]),
            last_rotated_at=parse_time(spec["last_rotated_at"]),
            target=spec.get("target"),
            users=None if users is None else (users[0], users[1]),
            grant_from=spec.get("grant_from"),
            versions=tuple(SecretVersion.from_spec(v) for v in spec.get("versions", ())),
        )


@dataclass(frozen=True, slots=True)
class Verification:
    valid: bool
    version: int | None
    state: str | None
