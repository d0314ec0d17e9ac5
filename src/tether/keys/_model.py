"""Keys as Tether stores them (metadata only: never material), and who calls.

A `Key` is an estate object of type "key" (like a static credential or a target):
name, type, owning `encryption_key` identity, versions with their creation times, key
check values and (for signing keys) public keys, the minimum versions, escrow, a
scheduled deletion. Material lives in sealed records, one per version
(`key/<name>/v<N>`), opened only through the barrier.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tether._internal.timeutil import format_duration, format_time, parse_duration, parse_time
from tether.keys._types import KeyType

Spec = dict[str, Any]

#: The estate-object type keys are stored under.
KEY_TYPE = "key"


def sealed_id(name: str, version: int) -> str:
    return f"key/{name}/v{version}"


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _parse(value: str | None) -> dt.datetime | None:
    return None if value is None else parse_time(value)


# -- principals: one type per role, so a call cannot be made in the wrong one --


@dataclass(frozen=True, slots=True)
class KeyAdmin:
    """A key administrator: creates, rotates, configures, schedules deletion. Never
    uses a key. `name` is the person's stable name (the same in every role they hold)."""

    name: str

    @property
    def actor(self) -> str:
        return f"key-admin:{self.name}"


@dataclass(frozen=True, slots=True)
class KeyUser:
    """A key user: an attested workload (or its token) that encrypts, signs, ... under
    the policy decision for `identity_id`. Never administers a key."""

    name: str
    identity_id: str
    attested: bool = False
    task_id: str | None = None
    task_name: str | None = None
    issuer_id: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)
    source_ip: str | None = None
    intent: str | None = None

    @property
    def actor(self) -> str:
        return f"key-user:{self.name}"


@dataclass(frozen=True, slots=True)
class Approver:
    """A member of an approver group voting on a request (dual control)."""

    name: str

    @property
    def actor(self) -> str:
        return f"approver:{self.name}"


KeyPrincipal = KeyAdmin | KeyUser | Approver


# -- keys --


@dataclass(frozen=True, slots=True)
class EscrowHolder:
    """A named escrow holder and the public key their shares are sealed to: X25519
    (`x25519:<base64>` or raw base64 of the 32 bytes, or PEM) or RSA (PEM, >= 2048
    bits, OAEP-SHA256). From the estate's `escrow_holders:`."""

    id: str
    recipient: str

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], path: str = "escrow_holders[]") -> EscrowHolder:
        from tether.keys._escrow import parse_recipient
        from tether.keys.errors import EscrowError

        if not isinstance(spec, Mapping):
            raise EscrowError(f"{path}: must be a mapping with id and recipient")
        holder_id, recipient = spec.get("id"), spec.get("recipient")
        if not isinstance(holder_id, str) or not holder_id:
            raise EscrowError(f"{path}.id: is required")
        if not isinstance(recipient, str):
            raise EscrowError(f"{path}.recipient: is required")
        parse_recipient(recipient, f"{path}.recipient")
        return cls(holder_id, recipient.strip())


@dataclass(frozen=True, slots=True)
class EscrowConfig:
    """Material of every version split M of N among these holders."""

    threshold: int
    holders: tuple[EscrowHolder, ...]

    def to_spec(self) -> Spec:
        return {
            "threshold": self.threshold,
            "holders": [{"id": h.id, "recipient": h.recipient} for h in self.holders],
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> EscrowConfig:
        return cls(
            threshold=int(spec["threshold"]),
            holders=tuple(EscrowHolder(h["id"], h["recipient"]) for h in spec["holders"]),
        )


@dataclass(frozen=True, slots=True)
class KeyVersion:
    number: int
    created_at: dt.datetime
    #: Key check value of the material (see `key_check_value`).
    kcv: str
    #: Signing keys: the public key, PEM (SubjectPublicKeyInfo).
    public_key: str | None = None
    #: Whether shares of this version's material are in escrow.
    escrowed: bool = False
    #: Decryptions counted when the version after it was made: what it decrypted since
    #: is the use of an old version (evidence for the "old version decryptable" finding).
    decryptions_at_rotation: int | None = None
    #: Set when crypto policy retired this version (usage limit, age, deprecation): it
    #: stays a finding until min_decryption_version moves past it.
    retired_for: str | None = None

    def to_spec(self) -> Spec:
        spec: Spec = {
            "number": self.number,
            "created_at": format_time(self.created_at),
            "kcv": self.kcv,
        }
        for name in ("public_key", "decryptions_at_rotation", "retired_for"):
            value = getattr(self, name)
            if value is not None:
                spec[name] = value
        if self.escrowed:
            spec["escrowed"] = True
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> KeyVersion:
        return cls(
            number=int(spec["number"]),
            created_at=parse_time(spec["created_at"]),
            kcv=spec["kcv"],
            public_key=spec.get("public_key"),
            escrowed=bool(spec.get("escrowed", False)),
            decryptions_at_rotation=spec.get("decryptions_at_rotation"),
            retired_for=spec.get("retired_for"),
        )


@dataclass(frozen=True, slots=True)
class DeletionSchedule:
    due_at: dt.datetime
    requested_by: str
    approval_id: str

    def to_spec(self) -> Spec:
        return {
            "due_at": format_time(self.due_at),
            "requested_by": self.requested_by,
            "approval_id": self.approval_id,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> DeletionSchedule:
        return cls(parse_time(spec["due_at"]), spec["requested_by"], spec["approval_id"])


@dataclass(frozen=True, slots=True)
class Key:
    """A named key and its versions. Never holds material."""

    name: str
    type: KeyType
    #: The `encryption_key` identity that owns it (owner, purpose, classification).
    identity_id: str
    created_at: dt.datetime
    created_by: str
    versions: tuple[KeyVersion, ...]
    #: The newest version (trimming removes old ones; it never removes this one).
    latest_version: int
    min_decryption_version: int = 1
    #: 0: encrypt with the latest version (Vault's convention).
    min_encryption_version: int = 0
    escrow: EscrowConfig | None = None
    #: The approver group whose M-of-N approvals destructive operations on it need;
    #: None: the service's default group.
    approver_group: str | None = None
    #: Per-key crypto policy overrides (changing them needs approvals).
    usage_limit: int | None = None
    max_age: dt.timedelta | None = None
    deletion: DeletionSchedule | None = None
    rotated_at: dt.datetime | None = None

    def version(self, number: int) -> KeyVersion | None:
        return next((v for v in self.versions if v.number == number), None)

    @property
    def latest(self) -> KeyVersion:
        found = self.version(self.latest_version)
        assert found is not None
        return found

    @property
    def encryption_version(self) -> int:
        """The version new ciphertexts, signatures and MACs use: the latest (a minimum
        encryption version only refuses to go below it, and cannot exceed the latest)."""
        return self.latest_version

    def decryptable(self, number: int) -> bool:
        return number >= self.min_decryption_version and self.version(number) is not None

    def to_spec(self) -> Spec:
        spec: Spec = {
            "name": self.name,
            "type": self.type.value,
            "identity": self.identity_id,
            "created_at": format_time(self.created_at),
            "created_by": self.created_by,
            "versions": [v.to_spec() for v in self.versions],
            "latest_version": self.latest_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
        }
        if self.escrow is not None:
            spec["escrow"] = self.escrow.to_spec()
        if self.approver_group is not None:
            spec["approver_group"] = self.approver_group
        if self.usage_limit is not None:
            spec["usage_limit"] = self.usage_limit
        if self.max_age is not None:
            spec["max_age"] = format_duration(self.max_age)
        if self.deletion is not None:
            spec["deletion"] = self.deletion.to_spec()
        if self.rotated_at is not None:
            spec["rotated_at"] = format_time(self.rotated_at)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Key:
        escrow = spec.get("escrow")
        deletion = spec.get("deletion")
        max_age = spec.get("max_age")
        return cls(
            name=spec["name"],
            type=KeyType(spec["type"]),
            identity_id=spec["identity"],
            created_at=parse_time(spec["created_at"]),
            created_by=spec["created_by"],
            versions=tuple(KeyVersion.from_spec(v) for v in spec["versions"]),
            latest_version=int(spec["latest_version"]),
            min_decryption_version=int(spec.get("min_decryption_version", 1)),
            min_encryption_version=int(spec.get("min_encryption_version", 0)),
            escrow=None if escrow is None else EscrowConfig.from_spec(escrow),
            approver_group=spec.get("approver_group"),
            usage_limit=spec.get("usage_limit"),
            max_age=None if max_age is None else parse_duration(max_age),
            deletion=None if deletion is None else DeletionSchedule.from_spec(deletion),
            rotated_at=_parse(spec.get("rotated_at")),
        )

    def with_versions(self, versions: tuple[KeyVersion, ...], **changes: Any) -> Key:
        return replace(self, versions=versions, **changes)


@dataclass(frozen=True, slots=True)
class VersionUsage:
    """A version's counters as `GET /v1/keys/{name}` shows them."""

    number: int
    created_at: dt.datetime
    kcv: str
    encryptions: int
    decryptions: int
    #: Decryptions since the version after it was made (None for the latest).
    decryptions_since_rotation: int | None
    last_decrypted_at: dt.datetime | None
    public_key: str | None
    escrowed: bool
    retired_for: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "created_at": format_time(self.created_at),
            "kcv": self.kcv,
            "encryptions": self.encryptions,
            "decryptions": self.decryptions,
            "decryptions_since_rotation": self.decryptions_since_rotation,
            "last_decrypted_at": _time(self.last_decrypted_at),
            "public_key": self.public_key,
            "escrowed": self.escrowed,
            "retired_for": self.retired_for,
        }


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What `GET /v1/keys/{name}` returns: metadata and counters, never material."""

    key: Key
    versions: tuple[VersionUsage, ...]
    #: The usage limit in force for a version (per key, else the crypto policy's).
    usage_limit: int | None

    @property
    def name(self) -> str:
        return self.key.name

    def to_dict(self) -> dict[str, Any]:
        key = self.key
        return {
            "name": key.name,
            "type": key.type.value,
            "identity": key.identity_id,
            "created_at": format_time(key.created_at),
            "created_by": key.created_by,
            "latest_version": key.latest_version,
            "min_decryption_version": key.min_decryption_version,
            "min_encryption_version": key.min_encryption_version,
            "rotated_at": _time(key.rotated_at),
            "usage_limit": self.usage_limit,
            "max_age": None if key.max_age is None else format_duration(key.max_age),
            "approver_group": key.approver_group,
            "escrow": None
            if key.escrow is None
            else {
                "threshold": key.escrow.threshold,
                "holders": [h.id for h in key.escrow.holders],
            },
            "deletion": None if key.deletion is None else key.deletion.to_spec(),
            "versions": [v.to_dict() for v in self.versions],
        }
