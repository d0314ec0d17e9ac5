"""The key service: named, versioned keys held inside the barrier, their use under a
policy decision, their administration under separation of duties and dual control.

Every call names its principal: a `KeyAdmin` administers (create, rotate, configure,
request deletion or recovery) and never uses; a `KeyUser` uses (encrypt, decrypt,
rewrap, datakey, sign, verify, hmac) under the policy decision and never administers;
an `Approver` votes on requests. A call in the wrong role is refused (403) and audited.

Writes to a key's metadata take the audit head's lock first (the first thing their
transaction does): key changes are serialized across every node, and each reads the
newest committed metadata before it changes it (no lost rotation, no two version 3s).
Each publishes KEYS_CHANGED {"key": name}; `invalidate(name)` drops this process's
cached metadata and opened material, and the app subscribes it to the feed.
"""

from __future__ import annotations

import datetime as dt
import hmac as hmac_lib
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from tether._internal.ids import SAFE_ID_RULE, is_safe_id
from tether._internal.timeutil import format_time, parse_duration, utcnow
from tether.audit import AuditLog
from tether.barrier import Barrier, Sealed
from tether.keys import _approvals as ap
from tether.keys._approvals import (
    APPROVAL_TYPE,
    ApprovalRequest,
    ApprovalState,
    ApproverGroup,
    Operation,
)
from tether.keys._decide import KeyDecider, KeyUseRequest, decide_safely
from tether.keys._escrow import (
    ESCROW_TYPE,
    check_envelope,
    escrow_id,
    make_bundle,
    split_to_holders,
    verify_shares,
)
from tether.keys._findings import (
    KeyFinding,
    admin_tokens,
    key_findings,
    key_using_owners,
    live_roles,
    role_conflicts,
)
from tether.keys._model import (
    KEY_TYPE,
    Approver,
    DeletionSchedule,
    EscrowConfig,
    EscrowHolder,
    Key,
    KeyAdmin,
    KeyInfo,
    KeyPrincipal,
    KeyUser,
    KeyVersion,
    VersionUsage,
    sealed_id,
)
from tether.keys._policy import CryptoPolicy, classification_of
from tether.keys._types import (
    KeyType,
    Loaded,
    decode_token,
    encode_token,
    generate_material,
    key_check_value,
    load,
    parse_key_type,
    token_version,
)
from tether.keys._usage import Reservations, TallyKey, UsageTally
from tether.keys.errors import (
    ApprovalClosed,
    ApprovalNotFound,
    ApprovalRefused,
    DecryptionFailed,
    EscrowError,
    InvalidKeyRequest,
    KeyExists,
    KeyNotFound,
    KeyOperationDenied,
    KeyPendingDeletion,
    KeysError,
    KeysUnavailable,
    VersionNotAllowed,
)
from tether.model import UNOWNED_KEY_RULES, AuditEvent, Identity, Kind, Profile, Usage
from tether.store import Store, StoreError, Tx

log = logging.getLogger("tether.keys")

#: Published in every transaction that changes a key ({"key": name}) or an approval
#: ({"approval": id}); subscribe `KeyService.invalidate_event` to it on every node.
KEYS_CHANGED = "keys.changed"
SYSTEM_ACTOR = "system:keys"
_USERS_TYPE = "key_users"
_SEALED_PURPOSE = "key"
#: Identities remembered per key as its users (evidence for the foreign-use finding).
_USERS_CAP = 256
_DATAKEY_BITS = (128, 256, 512)
_SIGNATURE_FORMATS = ("der", "raw")

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class KeySettings:
    #: Encryptions reserved per store write, per version (see tether.keys._usage).
    usage_block: int = 1024
    #: How long a scheduled deletion waits (cancellable until then).
    deletion_wait: dt.timedelta = dt.timedelta(days=7)
    #: The approver group of keys that name none.
    default_approver_group: str | None = "key-approvers"
    #: Items per batch call.
    max_batch: int = 1000
    #: Tallies held before a use flushes them itself (the worker flushes on a timer).
    flush_at: int = 10_000


@dataclass(frozen=True, slots=True)
class KeyParts:
    store: Store
    barrier: Barrier
    audit: AuditLog
    #: The estate's identities (the owning `encryption_key` ones, and users').
    identity_of: Callable[[str], Identity | None]
    #: The policy decision of every use; fail closed.
    decide: KeyDecider
    crypto_policy: Callable[[], CryptoPolicy] = CryptoPolicy
    approver_groups: Callable[[], Mapping[str, ApproverGroup]] = dict
    escrow_holders: Callable[[], Mapping[str, EscrowHolder]] = dict
    clock: Callable[[], dt.datetime] = utcnow
    settings: KeySettings = field(default_factory=KeySettings)


@dataclass(frozen=True, slots=True)
class DataKey:
    """An envelope data key: the wrapped form always, the plaintext unless wrapped only."""

    ciphertext: str
    plaintext: bytes | None
    bits: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One item of a batch: its value, or its error (a failed item fails alone)."""

    value: Any = None
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class ConfigureResult:
    key: KeyInfo
    #: The approval requests opened for the changes that need them (empty: all applied).
    approvals: tuple[ApprovalRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class EscrowVersionReport:
    version: int
    kcv: str
    holders: tuple[str, ...]
    threshold: int
    problems: tuple[str, ...]
    #: With shares given: whether they rebuilt this version (by its KCV). None: not tried.
    reconstructs: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.reconstructs is not False


@dataclass(frozen=True, slots=True)
class EscrowReport:
    key: str
    versions: tuple[EscrowVersionReport, ...]

    @property
    def ok(self) -> bool:
        return bool(self.versions) and all(v.ok for v in self.versions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "ok": self.ok,
            "versions": [
                {
                    "version": v.version,
                    "kcv": v.kcv,
                    "holders": list(v.holders),
                    "threshold": v.threshold,
                    "problems": list(v.problems),
                    "reconstructs": v.reconstructs,
                }
                for v in self.versions
            ],
        }


#: What an approved operation did: the key after it, the audit action, the result.
_Effect = tuple[Key, str, dict[str, Any]]


class _Open:
    """A key as this process holds it: its metadata and the versions opened so far."""

    __slots__ = ("key", "loaded")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.loaded: dict[int, Loaded] = {}


class KeyService:
    def __init__(self, parts: KeyParts) -> None:
        self.parts = parts
        self._store = parts.store
        self._barrier = parts.barrier
        self._audit = parts.audit
        self._clock = parts.clock
        self._settings = parts.settings
        self._lock = threading.Lock()
        self._cache: dict[str, _Open] = {}
        self._generation = 0
        self._rotating: dict[str, threading.Lock] = {}
        self._reservations = Reservations(self._reserve, parts.settings.usage_block)
        self._tally = UsageTally()
        #: Called with usage evidence at each flush (one per identity, key and operation):
        #: the app hands it to governance (`Governance.record`).
        self.on_used: list[Callable[[Usage], None]] = []

    # ------------------------------------------------------------------ cache --
    def invalidate(self, name: str | None = None) -> None:
        """Forget cached metadata and material (of one key, or all): after a change here
        (on commit) or elsewhere (KEYS_CHANGED), and on seal."""
        with self._lock:
            self._generation += 1
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def invalidate_event(self, data: Mapping[str, Any]) -> None:
        """The feed handler of KEYS_CHANGED."""
        name = data.get("key")
        self.invalidate(name if isinstance(name, str) else None)

    def _cached(self, name: str) -> _Open:
        with self._lock:
            held = self._cache.get(name)
            generation = self._generation
        if held is not None:
            return held
        with self._store.read() as tx:
            key = _load(tx, name)
        opened = _Open(key)
        with self._lock:
            if self._generation == generation:
                self._cache[name] = opened
        return opened

    def _material(self, opened: _Open, version: int) -> Loaded:
        loaded = opened.loaded.get(version)
        if loaded is not None:
            return loaded
        key = opened.key
        try:
            with self._store.read() as tx:
                material = self._barrier.get_secret(tx, sealed_id(key.name, version))
        except Sealed:
            raise KeysUnavailable("Tether is sealed: key material is locked") from None
        if material is None:
            raise VersionNotAllowed(f"version {version} of key {key.name} no longer exists")
        loaded = load(key.type, version, material)
        opened.loaded[version] = loaded
        return loaded

    # ------------------------------------------------------------ read models --
    def _info(self, tx: Tx, key: Key) -> KeyInfo:
        counts = {u.version: u for u in tx.key_usage(key.name)}
        versions = []
        for v in key.versions:
            c = counts.get(v.number)
            decryptions = c.decryptions if c else 0
            since = None
            if v.decryptions_at_rotation is not None:
                since = max(0, decryptions - v.decryptions_at_rotation)
            versions.append(
                VersionUsage(
                    number=v.number,
                    created_at=v.created_at,
                    kcv=v.kcv,
                    encryptions=c.encryptions if c else 0,
                    decryptions=decryptions,
                    decryptions_since_rotation=since,
                    last_decrypted_at=c.last_decrypted_at if c else None,
                    public_key=v.public_key,
                    escrowed=v.escrowed,
                    retired_for=v.retired_for,
                )
            )
        return KeyInfo(key, tuple(versions), self.parts.crypto_policy().limit_for(key))

    def get(self, principal: KeyPrincipal, name: str) -> KeyInfo:
        """Metadata, versions, minimums and counters of a key; never material."""
        del principal  # every role may read metadata; the transport decides who may call
        with self._store.read() as tx:
            return self._info(tx, _load(tx, name))

    def list_keys(self, principal: KeyPrincipal) -> list[KeyInfo]:
        del principal
        with self._store.read() as tx:
            keys = [Key.from_spec(s) for s in tx.estate_objects(KEY_TYPE).values()]
            return [self._info(tx, k) for k in sorted(keys, key=lambda k: k.name)]

    # --------------------------------------------------------------- writing --
    def _write(self, work: Callable[[Tx], R], invalidate: str | None = None) -> R:
        """Run `work` in a transaction serialized with every other key change (the audit
        head's lock is taken first), publishing KEYS_CHANGED after it."""
        try:
            with self._store.transaction() as tx:
                tx.audit_head()
                result = work(tx)
                tx.publish(KEYS_CHANGED, {"key": invalidate} if invalidate else {})
                tx.on_commit(lambda: self.invalidate(invalidate))
        except Sealed:
            raise KeysUnavailable("Tether is sealed: key material is locked") from None
        return result

    def _event(
        self,
        action: str,
        principal: KeyPrincipal | str,
        key: Key | str | None,
        details: Mapping[str, Any],
        *,
        result: str = "ok",
        reason: str | None = None,
        subject: tuple[str | None, str | None] = (None, None),
    ) -> AuditEvent:
        """An audit event about `key`. `subject`: (identity id, task id) of a user;
        without one, the key's own identity."""
        actor = principal if isinstance(principal, str) else principal.actor
        identity_id, task_id = subject
        if isinstance(principal, KeyUser) and identity_id is None:
            identity_id, task_id = principal.identity_id, principal.task_id
        owner = None
        if isinstance(key, Key):
            identity_id = identity_id or key.identity_id
            name: str | None = key.name
        else:
            name = key
        if identity_id is not None:
            identity = self.parts.identity_of(identity_id)
            owner = identity.owner_id if identity is not None else None
        return AuditEvent(
            action=action,
            actor=actor,
            result=result,
            identity_id=identity_id,
            owner_id=owner,
            task_id=task_id,
            reason=reason,
            details={"key": name, **details} if name is not None else dict(details),
        )

    def _refuse(self, event: AuditEvent, error: KeysError) -> KeysError:
        """Audit a refusal in a transaction of its own (group-committed), then give the
        error to raise. If the audit cannot be written, that error is raised instead."""
        self._store.commit_together(lambda tx: self._audit.append(tx, [event]))
        return error

    def _admin(self, principal: KeyPrincipal, action: str, name: str | None) -> KeyAdmin:
        if isinstance(principal, KeyAdmin):
            return principal
        role = "a key user" if isinstance(principal, KeyUser) else "an approver"
        reason = f"{action} needs a key administrator; {principal.name} calls as {role}"
        raise self._refuse(
            self._event(
                f"key.{action}",
                principal,
                name,
                {"role": type(principal).__name__},
                result="denied",
                reason=reason,
            ),
            KeyOperationDenied(reason),
        )

    def _group(self, key: Key) -> ApproverGroup:
        group_id = key.approver_group or self._settings.default_approver_group
        group = self.parts.approver_groups().get(group_id) if group_id else None
        if group is None:
            raise KeyOperationDenied(
                f"key {key.name} has no approver group ({group_id or 'none configured'}): "
                "operations that need approvals are refused until the estate declares it"
            )
        return group

    # ----------------------------------------------------------- administration --
    #: The options `create` takes besides name, type and identity (POST /v1/keys).
    CREATE_OPTIONS = ("escrow", "approver_group", "usage_limit", "max_age")

    def create(
        self,
        principal: KeyPrincipal,
        name: str,
        key_type: KeyType | str,
        identity_id: str,
        options: Mapping[str, Any] | None = None,
    ) -> KeyInfo:
        """A new key with version 1, owned by the `encryption_key` identity `identity_id`.
        `options` (all optional): `escrow: {holders: [holder ids from the estate],
        threshold: M}`, `approver_group`, `usage_limit` (encryptions per version),
        `max_age` ("90d")."""
        admin = self._admin(principal, "create", name)
        options = dict(options or {})
        for option in options:
            if option not in self.CREATE_OPTIONS:
                raise InvalidKeyRequest(
                    f"{option}: unknown field (expected {', '.join(self.CREATE_OPTIONS)})"
                )
        if not is_safe_id(name):
            raise InvalidKeyRequest(f"name: is not a valid key name: use {SAFE_ID_RULE}")
        kind = key_type if isinstance(key_type, KeyType) else parse_key_type(key_type)
        if kind in self.parts.crypto_policy().deprecated:
            raise InvalidKeyRequest(f"type: {kind.value} is deprecated by the crypto policy")
        identity = self.parts.identity_of(identity_id)
        if identity is None:
            raise InvalidKeyRequest(f"identity: no identity {identity_id!r} in the estate")
        if identity.kind is not Kind.ENCRYPTION_KEY:
            raise InvalidKeyRequest(
                f"identity: {identity_id} is of kind {identity.kind.value}; a key is owned by an "
                "identity of kind encryption_key"
            )
        escrow = options.get("escrow")
        escrow_config = None if escrow is None else self._escrow_config(escrow)
        approver_group = options.get("approver_group")
        if approver_group is not None and approver_group not in self.parts.approver_groups():
            raise InvalidKeyRequest(f"approver_group: no approver group {approver_group!r}")
        limit = _usage_limit(options.get("usage_limit"), kind)
        age = _max_age(options.get("max_age"))
        now = self._clock()

        def work(tx: Tx) -> KeyInfo:
            if name in tx.estate_objects(KEY_TYPE):
                raise KeyExists(f"name: key {name!r} exists")
            material = generate_material(kind)
            version = self._new_version(tx, name, kind, 1, material, escrow_config, now)
            key = Key(
                name=name,
                type=kind,
                identity_id=identity_id,
                created_at=now,
                created_by=admin.name,
                versions=(version,),
                latest_version=1,
                escrow=escrow_config,
                approver_group=approver_group,
                usage_limit=limit,
                max_age=age,
                rotated_at=now,
            )
            _save(tx, key)
            details: dict[str, Any] = {"type": kind.value, "version": 1, "kcv": version.kcv}
            if escrow_config is not None:
                details["escrow"] = {
                    "threshold": escrow_config.threshold,
                    "holders": [h.id for h in escrow_config.holders],
                }
            self._audit.append(tx, [self._event("key.create", admin, key, details)], now)
            return self._info(tx, key)

        return self._write(work, name)

    def _escrow_config(self, spec: Mapping[str, Any]) -> EscrowConfig:
        if not isinstance(spec, Mapping):
            raise EscrowError("escrow: must be {holders: [...], threshold: M}")
        holders_spec = spec.get("holders")
        threshold = spec.get("threshold")
        if not isinstance(holders_spec, list | tuple) or not holders_spec:
            raise EscrowError("escrow.holders: must list escrow holder ids")
        known = self.parts.escrow_holders()
        holders = []
        for index, holder_id in enumerate(holders_spec):
            holder = known.get(holder_id) if isinstance(holder_id, str) else None
            if holder is None:
                raise EscrowError(f"escrow.holders[{index}]: no escrow holder {holder_id!r}")
            holders.append(holder)
        if len({h.id for h in holders}) != len(holders):
            raise EscrowError("escrow.holders: a holder is named twice")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise EscrowError("escrow.threshold: must be an integer")
        if not 2 <= threshold <= len(holders):
            raise EscrowError(
                f"escrow.threshold: must be from 2 to the number of holders ({len(holders)})"
            )
        return EscrowConfig(threshold, tuple(holders))

    def _new_version(
        self,
        tx: Tx,
        name: str,
        kind: KeyType,
        number: int,
        material: bytes,
        escrow: EscrowConfig | None,
        now: dt.datetime,
    ) -> KeyVersion:
        """Seal the material (and escrow its shares) inside `tx`; the version's metadata."""
        self._barrier.put_secret(tx, sealed_id(name, number), _SEALED_PURPOSE, material)
        if escrow is not None:
            self._escrow_version(tx, name, kind, number, material, escrow)
        return KeyVersion(
            number=number,
            created_at=now,
            kcv=key_check_value(material),
            public_key=load(kind, number, material).public_pem(),
            escrowed=escrow is not None,
        )

    def _escrow_version(
        self, tx: Tx, name: str, kind: KeyType, number: int, material: bytes, escrow: EscrowConfig
    ) -> None:
        envelopes = split_to_holders(
            name,
            kind,
            number,
            material,
            escrow.threshold,
            [(h.id, h.recipient) for h in escrow.holders],
        )
        tx.put_estate_object(ESCROW_TYPE, escrow_id(name, number), {"envelopes": envelopes})

    def rotate(self, principal: KeyPrincipal, name: str, reason: str | None = None) -> KeyInfo:
        """A new version; new ciphertexts use it, older versions still decrypt down to
        min_decryption_version. Touches no lease."""
        admin = self._admin(principal, "rotate", name)
        return self._rotate(name, admin.actor, reason or "operator rotation")

    def _rotate(
        self,
        name: str,
        actor: str,
        reason: str,
        *,
        retired_for: str | None = None,
        expect_latest: int | None = None,
    ) -> KeyInfo:
        now = self._clock()

        def work(tx: Tx) -> KeyInfo:
            key = _load(tx, name)
            if expect_latest is not None and key.latest_version != expect_latest:
                return self._info(tx, key)  # rotated meanwhile (here or on another node)
            if key.deletion is not None:
                raise KeyPendingDeletion(f"key {name} is scheduled for deletion")
            number = key.latest_version + 1
            counts = {u.version: u for u in tx.key_usage(name)}
            previous = key.latest
            baseline = counts[previous.number].decryptions if previous.number in counts else 0
            versions = tuple(
                replace(v, decryptions_at_rotation=baseline, retired_for=retired_for)
                if v.number == previous.number
                else v
                for v in key.versions
            )
            version = self._new_version(
                tx, name, key.type, number, generate_material(key.type), key.escrow, now
            )
            rotated = replace(
                key, versions=(*versions, version), latest_version=number, rotated_at=now
            )
            _save(tx, rotated)
            details: dict[str, Any] = {
                "version": number,
                "previous_version": previous.number,
                "kcv": version.kcv,
            }
            if retired_for is not None:
                details["retired_for"] = retired_for
            self._audit.append(
                tx, [self._event("key.rotate", actor, rotated, details, reason=reason)], now
            )
            return self._info(tx, rotated)

        info = self._write(work, name)
        self._reservations.forget(name)
        return info

    #: The fields `configure` takes (PATCH /v1/keys/{name}).
    CONFIGURABLE = (
        "min_decryption_version",
        "min_encryption_version",
        "usage_limit",
        "max_age",
        "escrow",
        "approver_group",
    )

    def configure(
        self,
        principal: KeyPrincipal,
        name: str,
        changes: Mapping[str, Any],
        reason: str | None = None,
    ) -> ConfigureResult:
        """PATCH /v1/keys/{name} with any of CONFIGURABLE. Raising
        min_decryption_version and setting min_encryption_version take effect at once;
        lowering min_decryption_version, or changing the key's crypto policy
        (usage_limit, max_age, escrow, approver_group; None clears a per-key override),
        opens an approval request each (`approvals` in the result)."""
        admin = self._admin(principal, "configure", name)
        for field_name in changes:
            if field_name not in self.CONFIGURABLE:
                raise InvalidKeyRequest(
                    f"{field_name}: unknown field (expected {', '.join(self.CONFIGURABLE)})"
                )
        current = self.get(admin, name).key
        immediate, lower = _version_changes(current, changes)
        gated = self._policy_changes(current, changes)
        if immediate:
            now = self._clock()

            def work(tx: Tx) -> None:
                key = _load(tx, name)
                changed = replace(key, **immediate)
                _save(tx, changed)
                before = {k: getattr(key, k) for k in immediate}
                details = {"changes": dict(immediate), "before": before}
                event = self._event("key.configure", admin, changed, details, reason=reason)
                self._audit.append(tx, [event], now)

            self._write(work, name)
        approvals = []
        if lower is not None:
            approvals.append(
                self._request(
                    admin,
                    current,
                    Operation.LOWER_MIN_DECRYPTION,
                    {"min_decryption_version": lower},
                    reason,
                )
            )
        if gated:
            approvals.append(
                self._request(admin, current, Operation.CHANGE_CRYPTO_POLICY, gated, reason)
            )
        return ConfigureResult(self.get(admin, name), tuple(approvals))

    def _policy_changes(self, current: Key, changes: Mapping[str, Any]) -> dict[str, Any]:
        gated: dict[str, Any] = {}
        if "usage_limit" in changes:
            gated["usage_limit"] = _usage_limit(changes["usage_limit"], current.type)
        if "max_age" in changes:
            age = _max_age(changes["max_age"])
            gated["max_age"] = None if age is None else int(age.total_seconds())
        if "escrow" in changes:
            escrow = changes["escrow"]
            config = None if escrow is None else self._escrow_config(escrow)
            gated["escrow"] = None if config is None else config.to_spec()
        if "approver_group" in changes:
            group = changes["approver_group"]
            if group is not None and group not in self.parts.approver_groups():
                raise InvalidKeyRequest(f"approver_group: no approver group {group!r}")
            gated["approver_group"] = group
        return gated

    def request_delete(
        self, principal: KeyPrincipal, name: str, reason: str | None = None
    ) -> ApprovalRequest:
        """DELETE /v1/keys/{name}: an approval request; once approved the deletion is
        scheduled `deletion_wait` ahead, cancellable by a key admin until then."""
        admin = self._admin(principal, "delete", name)
        key = self.get(admin, name).key
        if key.deletion is not None:
            raise KeyPendingDeletion(f"key {name} is scheduled for deletion already")
        return self._request(admin, key, Operation.DELETE_KEY, {}, reason)

    def request_delete_versions(
        self, principal: KeyPrincipal, name: str, versions: Sequence[int], reason: str | None = None
    ) -> ApprovalRequest:
        """Delete these versions' material (each must be below min_decryption_version)."""
        admin = self._admin(principal, "delete_version", name)
        key = self.get(admin, name).key
        wanted = sorted({_int(v, "versions[]") for v in versions})
        if not wanted:
            raise InvalidKeyRequest("versions: name at least one version")
        for number in wanted:
            if key.version(number) is None:
                raise InvalidKeyRequest(f"versions: key {name} has no version {number}")
            if number >= key.min_decryption_version:
                raise InvalidKeyRequest(
                    f"versions: version {number} still decrypts (min_decryption_version is "
                    f"{key.min_decryption_version}); raise the minimum first"
                )
        return self._request(admin, key, Operation.DELETE_VERSION, {"versions": wanted}, reason)

    def trim(
        self, principal: KeyPrincipal, name: str, reason: str | None = None
    ) -> ApprovalRequest:
        """Request deleting every version below min_decryption_version."""
        admin = self._admin(principal, "trim", name)
        key = self.get(admin, name).key
        below = [v.number for v in key.versions if v.number < key.min_decryption_version]
        if not below:
            raise InvalidKeyRequest(
                f"key {name} keeps no version below min_decryption_version "
                f"({key.min_decryption_version}): nothing to trim"
            )
        return self.request_delete_versions(admin, name, below, reason or "trim")

    def request_escrow_recovery(
        self, principal: KeyPrincipal, name: str, reason: str | None = None
    ) -> ApprovalRequest:
        """Start escrow recovery: once approved, `escrow_export` gives the holders' share
        bundles (to the requester, once)."""
        admin = self._admin(principal, "escrow_recovery", name)
        key = self.get(admin, name).key
        if key.escrow is None:
            raise EscrowError(f"key {name} is not escrowed")
        return self._request(admin, key, Operation.ESCROW_RECOVERY, {}, reason)

    def cancel_deletion(
        self, principal: KeyPrincipal, name: str, reason: str | None = None
    ) -> KeyInfo:
        admin = self._admin(principal, "cancel_deletion", name)
        now = self._clock()

        def work(tx: Tx) -> KeyInfo:
            key = _load(tx, name)
            if key.deletion is None:
                raise InvalidKeyRequest(f"key {name} is not scheduled for deletion")
            restored = replace(key, deletion=None)
            _save(tx, restored)
            details = {
                "due_at": format_time(key.deletion.due_at),
                "approval": key.deletion.approval_id,
            }
            self._audit.append(
                tx, [self._event("key.delete.cancel", admin, restored, details, reason=reason)], now
            )
            return self._info(tx, restored)

        return self._write(work, name)

    # ---------------------------------------------------------------- approvals --
    def _request(
        self,
        admin: KeyAdmin,
        key: Key,
        operation: Operation,
        params: Mapping[str, Any],
        reason: str | None,
    ) -> ApprovalRequest:
        group = self._group(key)
        now = self._clock()
        request = ap.open_request(operation, key.name, params, admin.name, group, now, reason)

        def work(tx: Tx) -> ApprovalRequest:
            _save_approval(tx, request)
            self._audit.append(
                tx,
                [
                    self._event(
                        "key.approval.request",
                        admin,
                        key,
                        {
                            "approval": request.id,
                            "operation": operation.value,
                            "params": dict(params),
                            "group": group.id,
                            "threshold": group.threshold,
                            "expires_at": format_time(request.expires_at),
                        },
                        reason=reason,
                    )
                ],
                now,
            )
            return request

        return self._write(work, key.name)

    def approvals(
        self,
        principal: KeyPrincipal,
        state: ApprovalState | str | None = None,
        key: str | None = None,
    ) -> list[ApprovalRequest]:
        del principal
        wanted = None if state is None else ApprovalState(state)
        now = self._clock()
        with self._store.read() as tx:
            found = [
                ApprovalRequest.from_spec(s) for s in tx.estate_objects(APPROVAL_TYPE).values()
            ]
        out = []
        for stored in found:
            request = (
                replace(stored, state=ApprovalState.EXPIRED) if ap.expired(stored, now) else stored
            )
            if (wanted is None or request.state is wanted) and (key is None or request.key == key):
                out.append(request)
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def approval(self, principal: KeyPrincipal, approval_id: str) -> ApprovalRequest:
        del principal
        with self._store.read() as tx:
            request = _load_approval(tx, approval_id)
        if ap.expired(request, self._clock()):
            request = replace(request, state=ApprovalState.EXPIRED)
        return request

    def _voter(self, principal: KeyPrincipal, action: str, approval_id: str) -> Approver:
        if isinstance(principal, Approver):
            return principal
        reason = f"{action} needs an approver; {principal.name} calls as {type(principal).__name__}"
        raise self._refuse(
            self._event(
                f"key.approval.{action}",
                principal,
                None,
                {"approval": approval_id},
                result="denied",
                reason=reason,
            ),
            ApprovalRefused(reason),
        )

    def approve(
        self, principal: KeyPrincipal, approval_id: str, comment: str | None = None
    ) -> ApprovalRequest:
        """One approval; the M-th distinct one executes the operation in the same
        transaction (a deletion is scheduled)."""
        approver = self._voter(principal, "approve", approval_id)
        return self._vote(approver, approval_id, comment, approve=True)

    def deny(
        self, principal: KeyPrincipal, approval_id: str, comment: str | None = None
    ) -> ApprovalRequest:
        """One member's deny closes the request."""
        approver = self._voter(principal, "deny", approval_id)
        return self._vote(approver, approval_id, comment, approve=False)

    def _vote(
        self, approver: Approver, approval_id: str, comment: str | None, *, approve: bool
    ) -> ApprovalRequest:
        now = self._clock()
        verb = "approve" if approve else "deny"
        refusal: list[KeysError] = []

        def work(tx: Tx) -> ApprovalRequest:
            request = _load_approval(tx, approval_id)
            if ap.expired(request, now):
                closed = self._expire(tx, request, now)
                refusal.append(
                    ApprovalClosed(
                        f"approval {approval_id} expired at {format_time(request.expires_at)}"
                    )
                )
                return closed
            group = self.parts.approver_groups().get(request.group_id)
            try:
                voted = (ap.approve if approve else ap.deny)(
                    request, group, approver.name, now, comment
                )
            except (ApprovalRefused, ApprovalClosed) as exc:
                self._audit.append(
                    tx,
                    [
                        self._event(
                            f"key.approval.{verb}",
                            approver,
                            request.key,
                            {"approval": approval_id, "operation": request.operation.value},
                            result="denied",
                            reason=str(exc),
                        )
                    ],
                    now,
                )
                refusal.append(exc)
                return request
            events = [
                self._event(
                    f"key.approval.{verb}",
                    approver,
                    request.key,
                    {
                        "approval": approval_id,
                        "operation": request.operation.value,
                        "approvals": len(voted.approvals),
                        "threshold": voted.threshold,
                        "comment": comment,
                    },
                )
            ]
            if voted.state is ApprovalState.DENIED:
                events.append(
                    self._event(
                        "key.approval.denied",
                        SYSTEM_ACTOR,
                        request.key,
                        {"approval": approval_id, "denied_by": approver.name},
                    )
                )
            self._audit.append(tx, events, now)
            if voted.state is ApprovalState.APPROVED:
                voted = self._execute(tx, voted, now)
            _save_approval(tx, voted)
            return voted

        result = self._write(work, self._approval_key(approval_id))
        if refusal:
            raise refusal[0]
        return result

    def _approval_key(self, approval_id: str) -> str | None:
        try:
            return self.approval(Approver(SYSTEM_ACTOR), approval_id).key
        except ApprovalNotFound:
            raise
        except KeysError:
            return None

    def _expire(self, tx: Tx, request: ApprovalRequest, now: dt.datetime) -> ApprovalRequest:
        closed = replace(request, state=ApprovalState.EXPIRED)
        _save_approval(tx, closed)
        self._audit.append(
            tx,
            [
                self._event(
                    "key.approval.expire",
                    SYSTEM_ACTOR,
                    request.key,
                    {
                        "approval": request.id,
                        "operation": request.operation.value,
                        "approvals": len(request.approvals),
                        "threshold": request.threshold,
                    },
                )
            ],
            now,
        )
        return closed

    def cancel_approval(
        self, principal: KeyPrincipal, approval_id: str, reason: str | None = None
    ) -> ApprovalRequest:
        """The requester withdraws a pending (or approved, not yet exported) request."""
        admin = self._admin(principal, "approval.cancel", None)
        now = self._clock()

        def work(tx: Tx) -> ApprovalRequest:
            request = _load_approval(tx, approval_id)
            if request.requester != admin.name:
                raise ApprovalRefused(f"only {request.requester}, who requested it, may cancel it")
            if request.state not in (ApprovalState.PENDING, ApprovalState.APPROVED):
                raise ApprovalClosed(f"approval {approval_id} is {request.state.value}")
            cancelled = replace(request, state=ApprovalState.CANCELLED)
            _save_approval(tx, cancelled)
            self._audit.append(
                tx,
                [
                    self._event(
                        "key.approval.cancel",
                        admin,
                        request.key,
                        {"approval": approval_id, "operation": request.operation.value},
                        reason=reason,
                    )
                ],
                now,
            )
            return cancelled

        return self._write(work, None)

    def _execute(self, tx: Tx, request: ApprovalRequest, now: dt.datetime) -> ApprovalRequest:
        """Take the approved operation's effect inside the approving transaction."""
        execute = {
            "operation": request.operation.value,
            "approval": request.id,
            "approvers": list(request.approvers),
        }
        if request.operation is Operation.ESCROW_RECOVERY:
            # Approved; the effect is the export, which the requester takes (once).
            event = self._event(
                "key.approval.execute",
                SYSTEM_ACTOR,
                request.key,
                {**execute, "effect": "export allowed"},
            )
            self._audit.append(tx, [event], now)
            return request
        key = _load(tx, request.key)
        effects: dict[Operation, Callable[[Tx, Key, ApprovalRequest, dt.datetime], _Effect]] = {
            Operation.DELETE_KEY: self._schedule_deletion,
            Operation.DELETE_VERSION: self._delete_versions,
            Operation.LOWER_MIN_DECRYPTION: self._lower_min_decryption,
            Operation.CHANGE_CRYPTO_POLICY: self._change_policy,
        }
        key, action, result = effects[request.operation](tx, key, request, now)
        _save(tx, key)
        events = [
            self._event("key.approval.execute", SYSTEM_ACTOR, key, execute),
            self._event(action, SYSTEM_ACTOR, key, {"approval": request.id, **result}),
        ]
        self._audit.append(tx, events, now)
        return replace(request, state=ApprovalState.EXECUTED, executed_at=now, result=result)

    def _schedule_deletion(
        self, tx: Tx, key: Key, request: ApprovalRequest, now: dt.datetime
    ) -> _Effect:
        del tx
        due = now + self._settings.deletion_wait
        scheduled = replace(key, deletion=DeletionSchedule(due, request.requester, request.id))
        return scheduled, "key.delete.schedule", {"deletion_due_at": format_time(due)}

    def _delete_versions(
        self, tx: Tx, key: Key, request: ApprovalRequest, now: dt.datetime
    ) -> _Effect:
        del now
        numbers = [int(v) for v in request.params.get("versions", ())]
        gone = [n for n in numbers if key.version(n) is not None and n < key.min_decryption_version]
        kept = replace(key, versions=tuple(v for v in key.versions if v.number not in gone))
        tx.delete_sealed([sealed_id(key.name, n) for n in gone])
        for n in gone:
            tx.delete_estate_object(ESCROW_TYPE, escrow_id(key.name, n))
        tx.delete_key_usage(key.name, gone)
        return kept, "key.version.delete", {"deleted_versions": gone}

    def _lower_min_decryption(
        self, tx: Tx, key: Key, request: ApprovalRequest, now: dt.datetime
    ) -> _Effect:
        del tx, now
        wanted = int(request.params["min_decryption_version"])
        if wanted < min(v.number for v in key.versions):
            raise InvalidKeyRequest(
                f"min_decryption_version: version {wanted} was deleted meanwhile"
            )
        before = key.min_decryption_version
        lowered = replace(key, min_decryption_version=wanted)
        return (
            lowered,
            "key.configure",
            {
                "changes": {"min_decryption_version": wanted},
                "before": {"min_decryption_version": before},
            },
        )

    def _change_policy(
        self, tx: Tx, key: Key, request: ApprovalRequest, now: dt.datetime
    ) -> _Effect:
        del now
        params = request.params
        changes: dict[str, Any] = {}
        if "usage_limit" in params:
            changes["usage_limit"] = params["usage_limit"]
        if "max_age" in params:
            seconds = params["max_age"]
            changes["max_age"] = None if seconds is None else dt.timedelta(seconds=int(seconds))
        if "approver_group" in params:
            changes["approver_group"] = params["approver_group"]
        if "escrow" in params:
            spec = params["escrow"]
            config = None if spec is None else EscrowConfig.from_spec(spec)
            changes["escrow"] = config
            versions = []
            for version in key.versions:
                if config is None:
                    tx.delete_estate_object(ESCROW_TYPE, escrow_id(key.name, version.number))
                    versions.append(replace(version, escrowed=False))
                    continue
                material = self._barrier.get_secret(tx, sealed_id(key.name, version.number))
                if material is None:
                    continue
                self._escrow_version(tx, key.name, key.type, version.number, material, config)
                versions.append(replace(version, escrowed=True))
            changes["versions"] = tuple(versions)
        return replace(key, **changes), "key.configure", {"changes": dict(params)}

    # ------------------------------------------------------------------- escrow --
    def escrow_export(
        self, principal: KeyPrincipal, name: str, approval_id: str
    ) -> dict[str, dict[str, Any]]:
        """The holders' share bundles (holder id -> bundle), given once to the requester
        of an approved escrow-recovery request. No material, no share in the clear."""
        admin = self._admin(principal, "escrow_export", name)
        now = self._clock()

        def work(tx: Tx) -> dict[str, dict[str, Any]]:
            request = _load_approval(tx, approval_id)
            if request.operation is not Operation.ESCROW_RECOVERY or request.key != name:
                raise ApprovalRefused(f"approval {approval_id} is not an escrow recovery of {name}")
            if request.requester != admin.name:
                raise ApprovalRefused(f"only {request.requester}, who requested it, may export")
            if request.state is not ApprovalState.APPROVED:
                raise ApprovalClosed(
                    f"approval {approval_id} is {request.state.value}: recovery needs "
                    f"{request.threshold} approvals first"
                )
            key = _load(tx, name)
            objects = tx.estate_objects(ESCROW_TYPE)
            envelopes = [
                e
                for v in key.versions
                for e in objects.get(escrow_id(name, v.number), {}).get("envelopes", ())
            ]
            holders = sorted({str(e["holder"]) for e in envelopes})
            bundles = {h: make_bundle(h, envelopes) for h in holders}
            _save_approval(
                tx,
                replace(
                    request,
                    state=ApprovalState.EXECUTED,
                    executed_at=now,
                    result={"exported_to": holders},
                ),
            )
            self._audit.append(
                tx,
                [
                    self._event(
                        "key.escrow.export",
                        admin,
                        key,
                        {
                            "approval": approval_id,
                            "holders": holders,
                            "versions": sorted({int(e["version"]) for e in envelopes}),
                        },
                    )
                ],
                now,
            )
            return bundles

        return self._write(work, name)

    def escrow_verify(
        self,
        principal: KeyPrincipal,
        name: str,
        shares: Mapping[int, Sequence[bytes]] | None = None,
    ) -> EscrowReport:
        """Check every escrowed version's envelopes: one per holder, well-formed, about
        this version, carrying its key check value. With `shares` (version -> opened
        shares, e.g. from a holders' ceremony), also rebuild each version in memory and
        compare its KCV; nothing rebuilt is kept or returned. Audited."""
        if not isinstance(principal, KeyAdmin | Approver):
            self._admin(principal, "escrow_verify", name)
        with self._store.read() as tx:
            key = _load(tx, name)
            objects = tx.estate_objects(ESCROW_TYPE)
        if key.escrow is None:
            raise EscrowError(f"key {name} is not escrowed")
        reports = []
        for version in key.versions:
            envelopes = objects.get(escrow_id(name, version.number), {}).get("envelopes", [])
            problems: list[str] = []
            holders = []
            for envelope in envelopes:
                holders.append(str(envelope.get("holder")))
                problems += [
                    f"{envelope.get('holder')}: {p}"
                    for p in check_envelope(
                        envelope,
                        name=name,
                        version=version.number,
                        kcv=version.kcv,
                        threshold=key.escrow.threshold,
                    )
                ]
            if not envelopes:
                problems.append("no shares are in escrow for this version")
            elif len(envelopes) < key.escrow.threshold:
                problems.append("fewer shares than the threshold are in escrow")
            rebuilt = None
            if shares is not None and version.number in shares:
                rebuilt = verify_shares(
                    name, version.number, version.kcv, key.escrow.threshold, shares[version.number]
                )
            reports.append(
                EscrowVersionReport(
                    version.number,
                    version.kcv,
                    tuple(holders),
                    key.escrow.threshold,
                    tuple(problems),
                    rebuilt,
                )
            )
        report = EscrowReport(name, tuple(reports))
        event = self._event(
            "key.escrow.verify",
            principal,
            key,
            {
                "ok": report.ok,
                "versions": [
                    {"version": r.version, "ok": r.ok, "reconstructs": r.reconstructs}
                    for r in reports
                ],
            },
            result="ok" if report.ok else "failed",
        )
        self._store.commit_together(lambda tx: self._audit.append(tx, [event]))
        return report

    # --------------------------------------------------------------------- use --
    def _use(self, principal: KeyPrincipal, name: str, action: str) -> _Open:
        """The key opened for `action` by `principal`: refused (and audited) for a
        non-user, a key pending deletion, or a denying policy decision."""
        if not isinstance(principal, KeyUser):
            reason = (
                f"{action} needs a key user; {principal.name} calls as "
                f"{'a key administrator' if isinstance(principal, KeyAdmin) else 'an approver'}"
            )
            raise self._refuse(
                self._event(f"key.{action}", principal, name, {}, result="denied", reason=reason),
                KeyOperationDenied(reason),
            )
        if self._barrier.sealed:
            self.invalidate()  # no material stays in memory while sealed
            raise KeysUnavailable("Tether is sealed: key material is locked")
        opened = self._cached(name)
        key = opened.key
        if action not in key.type.actions:
            raise InvalidKeyRequest(f"{key.type.value} keys cannot {action}")
        if key.deletion is not None:
            raise self._refuse(
                self._use_event(
                    principal, key, action, "denied", "the key is scheduled for deletion"
                ),
                KeyPendingDeletion(f"key {name} is scheduled for deletion"),
            )
        verdict = decide_safely(
            self.parts.decide, KeyUseRequest(principal, action, key, self._clock())
        )
        if not verdict.allowed:
            event = self._use_event(
                principal, key, action, "denied", "; ".join(verdict.reasons), verdict.policy_ids
            )
            raise self._refuse(
                event,
                KeyOperationDenied(
                    f"{action} with key {name} is denied for {principal.identity_id}",
                    verdict.reasons,
                ),
            )
        return opened

    def _use_event(
        self,
        user: KeyUser,
        key: Key,
        action: str,
        result: str,
        reason: str,
        policy_ids: tuple[str, ...] = (),
    ) -> AuditEvent:
        return self._event(
            f"key.{action}",
            user,
            key.name,
            {"key_identity": key.identity_id, "policy_ids": list(policy_ids)},
            result=result,
            reason=reason,
        )

    def _count(
        self,
        user: KeyUser,
        name: str,
        version: int,
        operation: str,
        *,
        failed: bool = False,
        from_version: int | None = None,
        n: int = 1,
    ) -> None:
        item: TallyKey = (
            name,
            version,
            operation,
            user.actor,
            user.identity_id,
            user.task_id,
            from_version,
        )
        if self._tally.add(item, self._clock(), failed=failed, n=n) >= self._settings.flush_at:
            self.flush_usage()

    def _reserve(self, name: str, version: int, n: int) -> int:
        with self._store.transaction() as tx:
            return tx.reserve_key_usage(name, version, n)

    def _producing(self, opened: _Open, requested: int | None) -> tuple[_Open, Loaded]:
        """The version that makes a new ciphertext (signature, MAC), counted: the latest,
        or `requested` if allowed. A version at its usage limit is rotated away first
        (rotation, not refusal)."""
        for _attempt in range(4):
            key = opened.key
            number = key.latest_version if requested is None else requested
            if requested is not None:
                floor = key.min_encryption_version or key.latest_version
                if not floor <= requested <= key.latest_version:
                    raise VersionNotAllowed(
                        f"version {requested} of key {key.name} may not be used to encrypt "
                        f"(allowed: {floor} to {key.latest_version})"
                    )
            limit = self.parts.crypto_policy().limit_for(key)
            if self._reservations.take(key.name, number, limit):
                return opened, self._material(opened, number)
            if requested is not None:
                raise VersionNotAllowed(
                    f"version {requested} of key {key.name} has reached its usage limit"
                )
            opened = self._limit_reached(key, number)
        raise KeysError(f"key {opened.key.name}: no version under its usage limit could be found")

    def _limit_reached(self, key: Key, number: int) -> _Open:
        lock = self._rotating.setdefault(key.name, threading.Lock())
        with lock:
            fresh = self._cached(key.name)
            if fresh.key.latest_version == number:
                log.info(
                    "key version reached its usage limit; rotating",
                    extra={"key": key.name, "version": number},
                )
                self._rotate(
                    key.name,
                    SYSTEM_ACTOR,
                    "usage limit reached",
                    retired_for="usage-limit",
                    expect_latest=number,
                )
                fresh = self._cached(key.name)
        return fresh

    def _opening(self, opened: _Open, token: str) -> tuple[_Open, Loaded, bytes]:
        """The version that opens `token` (a ciphertext or signature), if allowed."""
        try:
            version, payload = decode_token(token)
        except ValueError:
            raise DecryptionFailed() from None
        key = opened.key
        if version > key.latest_version:
            # Another node may have rotated since this one cached the key.
            self.invalidate(key.name)
            opened = self._cached(key.name)
            key = opened.key
            if version > key.latest_version:
                raise DecryptionFailed()
        if version < key.min_decryption_version or key.version(version) is None:
            raise VersionNotAllowed(
                f"version {version} of key {key.name} may no longer be used "
                f"(min_decryption_version is {key.min_decryption_version})"
            )
        return opened, self._material(opened, version), payload

    def encrypt(
        self,
        principal: KeyPrincipal,
        name: str,
        plaintext: bytes,
        aad: bytes = b"",
        *,
        version: int | None = None,
    ) -> str:
        """`tether:v<N>:...` under the latest version (or `version`, if allowed)."""
        opened = self._use(principal, name, "encrypt")
        assert isinstance(principal, KeyUser)
        return self._encrypt_one(principal, opened, plaintext, aad, version, "encrypt")

    def _encrypt_one(
        self,
        user: KeyUser,
        opened: _Open,
        plaintext: bytes,
        aad: bytes,
        version: int | None,
        operation: str,
        from_version: int | None = None,
    ) -> str:
        opened, loaded = self._producing(opened, version)
        ciphertext = loaded.encrypt(opened.key.name, bytes(plaintext), bytes(aad))
        self._count(user, opened.key.name, loaded.version, operation, from_version=from_version)
        return ciphertext

    def decrypt(
        self, principal: KeyPrincipal, name: str, ciphertext: str, aad: bytes = b""
    ) -> bytes:
        opened = self._use(principal, name, "decrypt")
        assert isinstance(principal, KeyUser)
        return self._decrypt_one(principal, opened, ciphertext, aad, "decrypt")

    def _decrypt_one(
        self, user: KeyUser, opened: _Open, ciphertext: str, aad: bytes, operation: str
    ) -> bytes:
        name = opened.key.name
        try:
            opened, loaded, payload = self._opening(opened, ciphertext)
            plaintext = loaded.decrypt(name, payload, bytes(aad))
        except (DecryptionFailed, VersionNotAllowed):
            version = token_version(ciphertext) or 0
            self._count(user, name, version, operation, failed=True)
            raise
        if operation == "decrypt":
            self._count(user, name, loaded.version, "decrypt")
        return plaintext

    def rewrap(self, principal: KeyPrincipal, name: str, ciphertext: str, aad: bytes = b"") -> str:
        """The same plaintext under the latest version; it never leaves the service."""
        opened = self._use(principal, name, "rewrap")
        assert isinstance(principal, KeyUser)
        return self._rewrap_one(principal, opened, ciphertext, aad)

    def _rewrap_one(self, user: KeyUser, opened: _Open, ciphertext: str, aad: bytes) -> str:
        plaintext = self._decrypt_one(user, opened, ciphertext, aad, "rewrap")
        from_version = token_version(ciphertext)
        return self._encrypt_one(user, opened, plaintext, aad, None, "rewrap", from_version)

    def datakey(
        self,
        principal: KeyPrincipal,
        name: str,
        bits: int = 256,
        *,
        wrapped_only: bool = False,
        aad: bytes = b"",
    ) -> DataKey:
        """A fresh random data key, wrapped under the key (and in the clear unless
        `wrapped_only`), for envelope encryption."""
        if bits not in _DATAKEY_BITS:
            raise InvalidKeyRequest(f"bits: must be one of {', '.join(map(str, _DATAKEY_BITS))}")
        opened = self._use(principal, name, "datakey")
        assert isinstance(principal, KeyUser)
        plaintext = os.urandom(bits // 8)
        wrapped = self._encrypt_one(principal, opened, plaintext, aad, None, "datakey")
        return DataKey(wrapped, None if wrapped_only else plaintext, bits)

    def sign(
        self,
        principal: KeyPrincipal,
        name: str,
        message: bytes,
        *,
        prehashed: bool = False,
        marshaling: str = "der",
        version: int | None = None,
    ) -> str:
        _signature_format(marshaling)
        opened = self._use(principal, name, "sign")
        assert isinstance(principal, KeyUser)
        opened, loaded = self._producing(opened, version)
        signature = loaded.sign(bytes(message), prehashed, marshaling)
        self._count(principal, name, loaded.version, "sign")
        return signature

    def hmac(
        self, principal: KeyPrincipal, name: str, message: bytes, *, version: int | None = None
    ) -> str:
        opened = self._use(principal, name, "hmac")
        assert isinstance(principal, KeyUser)
        opened, loaded = self._producing(opened, version)
        mac = encode_token(loaded.version, loaded.mac(bytes(message)))
        self._count(principal, name, loaded.version, "hmac")
        return mac

    def verify(
        self,
        principal: KeyPrincipal,
        name: str,
        message: bytes,
        signature: str,
        *,
        prehashed: bool = False,
        marshaling: str = "der",
    ) -> bool:
        """A signature (signing keys) or MAC (hmac keys) of `message`: True or False.
        A version below min_decryption_version is refused (VersionNotAllowed)."""
        _signature_format(marshaling)
        opened = self._use(principal, name, "verify")
        assert isinstance(principal, KeyUser)
        return self._verify_one(principal, opened, message, signature, prehashed, marshaling)

    def _verify_one(
        self,
        user: KeyUser,
        opened: _Open,
        message: bytes,
        signature: str,
        prehashed: bool,
        marshaling: str,
    ) -> bool:
        name = opened.key.name
        try:
            opened, loaded, payload = self._opening(opened, signature)
        except DecryptionFailed:
            self._count(user, name, token_version(signature) or 0, "verify", failed=True)
            return False
        if opened.key.type is KeyType.HMAC_SHA256:
            valid = hmac_lib.compare_digest(loaded.mac(bytes(message)), payload)
        else:
            valid = loaded.verify(bytes(message), payload, prehashed, marshaling)
        self._count(user, name, loaded.version, "verify", failed=not valid)
        return valid

    # -------------------------------------------------------------- batch forms --
    def _batch(
        self,
        principal: KeyPrincipal,
        name: str,
        action: str,
        items: Sequence[R],
        one: Callable[[KeyUser, _Open, R], Any],
    ) -> list[BatchResult]:
        if len(items) > self._settings.max_batch:
            raise InvalidKeyRequest(f"items: at most {self._settings.max_batch} per batch")
        opened = self._use(principal, name, action)  # one decision for the batch
        assert isinstance(principal, KeyUser)
        out = []
        for item in items:
            try:
                out.append(BatchResult(value=one(principal, opened, item)))
            except KeysError as exc:
                out.append(BatchResult(error=str(exc), code=exc.code))
        return out

    def encrypt_batch(
        self, principal: KeyPrincipal, name: str, items: Sequence[tuple[bytes, bytes]]
    ) -> list[BatchResult]:
        """(plaintext, aad) items -> ciphertexts; a failed item is an error entry."""
        return self._batch(
            principal,
            name,
            "encrypt",
            items,
            lambda u, o, i: self._encrypt_one(u, o, i[0], i[1], None, "encrypt"),
        )

    def decrypt_batch(
        self, principal: KeyPrincipal, name: str, items: Sequence[tuple[str, bytes]]
    ) -> list[BatchResult]:
        """(ciphertext, aad) items -> plaintexts."""
        return self._batch(
            principal,
            name,
            "decrypt",
            items,
            lambda u, o, i: self._decrypt_one(u, o, i[0], i[1], "decrypt"),
        )

    def rewrap_batch(
        self, principal: KeyPrincipal, name: str, items: Sequence[tuple[str, bytes]]
    ) -> list[BatchResult]:
        return self._batch(
            principal, name, "rewrap", items, lambda u, o, i: self._rewrap_one(u, o, i[0], i[1])
        )

    def sign_batch(
        self,
        principal: KeyPrincipal,
        name: str,
        messages: Sequence[bytes],
        *,
        prehashed: bool = False,
        marshaling: str = "der",
    ) -> list[BatchResult]:
        _signature_format(marshaling)

        def one(user: KeyUser, opened: _Open, message: bytes) -> str:
            _current, loaded = self._producing(opened, None)
            signature = loaded.sign(bytes(message), prehashed, marshaling)
            self._count(user, name, loaded.version, "sign")
            return signature

        return self._batch(principal, name, "sign", messages, one)

    def hmac_batch(
        self, principal: KeyPrincipal, name: str, messages: Sequence[bytes]
    ) -> list[BatchResult]:
        def one(user: KeyUser, opened: _Open, message: bytes) -> str:
            _current, loaded = self._producing(opened, None)
            self._count(user, name, loaded.version, "hmac")
            return encode_token(loaded.version, loaded.mac(bytes(message)))

        return self._batch(principal, name, "hmac", messages, one)

    def verify_batch(
        self,
        principal: KeyPrincipal,
        name: str,
        items: Sequence[tuple[bytes, str]],
        *,
        prehashed: bool = False,
        marshaling: str = "der",
    ) -> list[BatchResult]:
        """(message, signature or MAC) items -> True/False."""
        _signature_format(marshaling)
        return self._batch(
            principal,
            name,
            "verify",
            items,
            lambda u, o, i: self._verify_one(u, o, i[0], i[1], prehashed, marshaling),
        )

    # --------------------------------------------------------------- the worker --
    def flush_usage(self) -> int:
        """Write the tallied use: one `key.usage` audit entry per (key, version,
        operation, principal), the decryption counters, and each key's users, in one
        transaction. On a store failure they are kept (bounded) for the next flush.
        Returns the number of entries written. Call it every few seconds and on stop."""
        tallies, decryptions, users = self._tally.drain()
        if not tallies and not decryptions:
            return 0
        now = self._clock()
        events = []
        for (name, version, operation, actor, identity_id, task_id, from_version), t in sorted(
            tallies.items(), key=lambda kv: tuple(str(x) for x in kv[0])
        ):
            details: dict[str, Any] = {
                "version": version,
                "operation": operation,
                "count": t.count,
                "failed": t.failed,
                "first": format_time(t.first),
                "last": format_time(t.last),
            }
            if from_version is not None:
                details["from_version"] = from_version
            events.append(
                self._event(
                    "key.usage",
                    actor,
                    name,
                    details,
                    subject=(identity_id, task_id),
                    result="ok" if not t.failed else ("failed" if not t.count else "partial"),
                )
            )
        try:
            with self._store.transaction() as tx:
                self._audit.append(tx, events, now)
                tx.add_key_decryptions(
                    [(k, v, n) for (k, v), n in sorted(decryptions.items())], now
                )
                stored = tx.estate_objects(_USERS_TYPE)
                for name, seen in sorted(users.items()):
                    known = dict(stored.get(name, {}).get("users", {}))
                    for identity_id, at in seen.items():
                        known[identity_id] = format_time(at)
                    if len(known) > _USERS_CAP:
                        known = dict(sorted(known.items(), key=lambda kv: kv[1])[-_USERS_CAP:])
                    tx.put_estate_object(_USERS_TYPE, name, {"users": known})
        except StoreError:
            log.warning("key usage could not be written; kept for the next flush")
            self._tally.restore(tallies, decryptions, users, self._settings.flush_at * 2)
            return 0
        for (name, _v, operation, _a, identity_id, _t, _f), t in tallies.items():
            if identity_id is None or not t.count:
                continue
            usage = Usage(identity_id, t.last, f"key.{operation}", credential=f"key:{name}")
            for listener in self.on_used:
                try:
                    listener(usage)
                except Exception:
                    log.exception("a key usage listener failed")
        return len(events)

    def rotate_due(self, now: dt.datetime | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """Rotate every key its crypto policy says is due (usage limit, maximum age);
        (name, reasons) of each rotated. For the leader's lifecycle worker."""
        now = now or self._clock()
        policy = self.parts.crypto_policy()
        rotated = []
        with self._store.read() as tx:
            keys = [Key.from_spec(s) for s in tx.estate_objects(KEY_TYPE).values()]
            counts = {k.name: {u.version: u for u in tx.key_usage(k.name)} for k in keys}
        for key in sorted(keys, key=lambda k: k.name):
            if key.deletion is not None:
                continue
            latest = counts[key.name].get(key.latest_version)
            reasons = policy.due_rotation(
                key,
                now,
                classification=classification_of(self.parts.identity_of(key.identity_id)),
                encryptions=latest.encryptions if latest else 0,
            )
            if not reasons:
                continue
            try:
                self._rotate(
                    key.name,
                    SYSTEM_ACTOR,
                    "crypto policy: " + ", ".join(reasons),
                    retired_for=",".join(reasons),
                    expect_latest=key.latest_version,
                )
            except KeysError as exc:
                log.warning(
                    "key rotation failed; will retry", extra={"key": key.name, "error": exc.code}
                )
                continue
            rotated.append((key.name, reasons))
        return rotated

    def purge_due(self, now: dt.datetime | None = None) -> list[str]:
        """Delete, for good, keys whose scheduled deletion is due: material, escrowed
        shares, counters and metadata. Audited per key."""
        now = now or self._clock()
        with self._store.read() as tx:
            due = sorted(
                Key.from_spec(s).name
                for s in tx.estate_objects(KEY_TYPE).values()
                if "deletion" in s
            )
        purged = []
        for name in due:

            def work(tx: Tx, name: str = name) -> bool:
                key = _load(tx, name)
                if key.deletion is None or key.deletion.due_at > now:
                    return False
                versions = [v.number for v in key.versions]
                tx.delete_sealed([sealed_id(name, n) for n in versions])
                for n in versions:
                    tx.delete_estate_object(ESCROW_TYPE, escrow_id(name, n))
                tx.delete_key_usage(name)
                tx.delete_estate_object(_USERS_TYPE, name)
                tx.delete_estate_object(KEY_TYPE, name)
                self._audit.append(
                    tx,
                    [
                        self._event(
                            "key.purge",
                            SYSTEM_ACTOR,
                            key,
                            {"versions": versions, "approval": key.deletion.approval_id},
                        )
                    ],
                    now,
                )
                return True

            if self._write(work, name):
                purged.append(name)
        return purged

    def expire_approvals(self, now: dt.datetime | None = None) -> int:
        """Close pending requests whose window passed (audited)."""
        now = now or self._clock()
        with self._store.read() as tx:
            pending = [
                ApprovalRequest.from_spec(s)
                for s in tx.estate_objects(APPROVAL_TYPE).values()
                if s.get("state") == ApprovalState.PENDING.value
            ]
        count = 0
        for request in pending:
            if not ap.expired(request, now):
                continue

            def work(tx: Tx, approval_id: str = request.id) -> bool:
                fresh = _load_approval(tx, approval_id)
                if not ap.expired(fresh, now):
                    return False
                self._expire(tx, fresh, now)
                return True

            if self._write(work, request.key):
                count += 1
        return count

    # ------------------------------------------------------------ governance --
    def findings(self, now: dt.datetime | None = None) -> list[KeyFinding]:
        """Finding candidates of every key (see tether.keys._findings), its owning
        identity in the estate or not. Governance takes them per identity through
        `findings_pass`, and a principal's role conflict from `role_conflict_findings`."""
        keys, users, policy, now = self._findings_inputs(now)
        with self._store.read() as tx:
            return self._findings_of(tx, sorted(keys, key=lambda k: k.name), users, policy, now)

    def findings_pass(
        self, now: dt.datetime | None = None
    ) -> Callable[[Sequence[str]], dict[str, list[KeyFinding]]]:
        """For one governance evaluation: the keys' metadata and users read once, then a
        function giving a page of identities' findings (identity id -> its keys'
        findings), reading the usage counters of that page's keys only. A key whose
        owning identity is not asked for (not in the estate) is not looked at."""
        keys, users, policy, now = self._findings_inputs(now)
        by_identity: dict[str, list[Key]] = {}
        for key in sorted(keys, key=lambda k: k.name):
            by_identity.setdefault(key.identity_id, []).append(key)

        def page(identity_ids: Sequence[str]) -> dict[str, list[KeyFinding]]:
            wanted = [k for i in identity_ids for k in by_identity.get(i, ())]
            if not wanted:
                return {}
            out: dict[str, list[KeyFinding]] = {}
            with self._store.read() as tx:
                for finding in self._findings_of(tx, wanted, users, policy, now):
                    assert finding.identity_id is not None
                    out.setdefault(finding.identity_id, []).append(finding)
            return out

        return page

    def role_conflict_findings(
        self,
        identities: Iterable[Identity],
        profiles: Mapping[str, Profile],
        now: dt.datetime | None = None,
    ) -> list[KeyFinding]:
        """key-role-conflict: principals holding key-admin on a live API token that can
        also use keys (through the owners of `identities` entitled to a key profile)."""
        now = now or self._clock()
        with self._store.read() as tx:
            tokens = tx.list_api_tokens()
        return role_conflicts(
            live_roles(tokens, now),
            key_using_owners(identities, profiles),
            admin_tokens(tokens, now),
        )

    def unowned_findings(
        self,
        identities: Iterable[Identity],
        profiles: Mapping[str, Profile],
        now: dt.datetime | None = None,
    ) -> dict[str, list[KeyFinding]]:
        """The findings no identity owns, by rule (every such rule named, found or not:
        governance resolves what is no longer found)."""
        found = self.role_conflict_findings(identities, profiles, now)
        return {rule: [f for f in found if f.rule == rule] for rule in sorted(UNOWNED_KEY_RULES)}

    def identity_of_key(self, name: object) -> str | None:
        """The owning identity of the key `name`, if there is such a key."""
        if not isinstance(name, str):
            return None
        with self._store.read() as tx:
            spec = tx.estate_objects(KEY_TYPE).get(name)
        return None if spec is None else str(spec["identity"])

    def summaries(self, identity_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
        """What governance shows of each key (of these owning identities; None: all), by
        name: its type, identity, versions and escrow. Metadata only, never material."""
        with self._store.read() as tx:
            specs = tx.estate_objects(KEY_TYPE)
        out = []
        for name in sorted(specs):
            key = Key.from_spec(specs[name])
            if identity_ids is not None and key.identity_id not in identity_ids:
                continue
            out.append(
                {
                    "name": key.name,
                    "type": key.type.value,
                    "identity": key.identity_id,
                    "latest_version": key.latest_version,
                    "min_decryption_version": key.min_decryption_version,
                    "min_encryption_version": key.min_encryption_version,
                    "escrowed": key.escrow is not None,
                    "escrow": None
                    if key.escrow is None
                    else {"threshold": key.escrow.threshold, "holders": len(key.escrow.holders)},
                    "rotated_at": None if key.rotated_at is None else format_time(key.rotated_at),
                    "deletion_due_at": None
                    if key.deletion is None
                    else format_time(key.deletion.due_at),
                }
            )
        return out

    def _findings_inputs(
        self, now: dt.datetime | None
    ) -> tuple[list[Key], Mapping[str, Any], CryptoPolicy, dt.datetime]:
        now = now or self._clock()
        with self._store.read() as tx:
            keys = [Key.from_spec(s) for s in tx.estate_objects(KEY_TYPE).values()]
            users = tx.estate_objects(_USERS_TYPE)
        return keys, users, self.parts.crypto_policy(), now

    def _findings_of(
        self,
        tx: Tx,
        keys: Sequence[Key],
        users: Mapping[str, Any],
        policy: CryptoPolicy,
        now: dt.datetime,
    ) -> list[KeyFinding]:
        out: list[KeyFinding] = []
        for key in keys:
            seen = dict(users.get(key.name, {}).get("users", {}))
            out.extend(
                key_findings(
                    key,
                    self.parts.identity_of(key.identity_id),
                    policy,
                    tx.key_usage(key.name),
                    seen,
                    {i: self.parts.identity_of(i) for i in seen},
                    now,
                )
            )
        return out


# -------------------------------------------------------------------- helpers --
def _load(tx: Tx, name: str) -> Key:
    spec = tx.estate_objects(KEY_TYPE).get(name)
    if spec is None:
        raise KeyNotFound(f"no key {name!r}")
    return Key.from_spec(spec)


def _save(tx: Tx, key: Key) -> None:
    tx.put_estate_object(KEY_TYPE, key.name, key.to_spec())


def _load_approval(tx: Tx, approval_id: str) -> ApprovalRequest:
    spec = tx.estate_objects(APPROVAL_TYPE).get(approval_id)
    if spec is None:
        raise ApprovalNotFound(f"no approval request {approval_id!r}")
    return ApprovalRequest.from_spec(spec)


def _save_approval(tx: Tx, request: ApprovalRequest) -> None:
    tx.put_estate_object(APPROVAL_TYPE, request.id, request.to_spec())


def _version_changes(current: Key, changes: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The minimum-version changes that apply at once, and a lowered
    min_decryption_version (which needs approvals), checked as Vault checks them:
    min_decryption_version from the oldest kept version to the latest;
    min_encryption_version 0 (the latest) or from min_decryption_version to the latest."""
    latest = current.latest_version
    immediate: dict[str, Any] = {}
    lower = None
    if changes.get("min_decryption_version") is not None:
        n = _int(changes["min_decryption_version"], "min_decryption_version")
        oldest = min(v.number for v in current.versions)
        if not oldest <= n <= latest:
            raise InvalidKeyRequest(
                f"min_decryption_version: must be from {oldest} (the oldest version kept) "
                f"to {latest} (the latest)"
            )
        if n < current.min_decryption_version:
            lower = n
        elif n > current.min_decryption_version:
            immediate["min_decryption_version"] = n
    floor = immediate.get("min_decryption_version", current.min_decryption_version)
    if changes.get("min_encryption_version") is not None:
        n = _int(changes["min_encryption_version"], "min_encryption_version")
        if n != 0 and not floor <= n <= latest:
            raise InvalidKeyRequest(
                f"min_encryption_version: must be 0 (the latest) or from {floor} "
                f"(min_decryption_version) to {latest} (the latest)"
            )
        immediate["min_encryption_version"] = n
    elif current.min_encryption_version and floor > current.min_encryption_version:
        raise InvalidKeyRequest(
            "min_decryption_version: cannot exceed min_encryption_version "
            f"({current.min_encryption_version}); raise that too, or set it to 0"
        )
    return immediate, lower


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidKeyRequest(f"{where}: must be an integer")
    return value


def _usage_limit(value: object, kind: KeyType) -> int | None:
    if value is None:
        return None
    from tether.keys._policy import AEAD_HARD_LIMIT

    n = _int(value, "usage_limit")
    cap = AEAD_HARD_LIMIT if kind.aead else 2**62
    if not 1 <= n <= cap:
        raise InvalidKeyRequest(f"usage_limit: must be from 1 to {cap}")
    return n


def _max_age(value: object) -> dt.timedelta | None:
    if value is None or isinstance(value, dt.timedelta):
        return value
    try:
        return parse_duration(str(value))
    except (ValueError, TypeError):
        raise InvalidKeyRequest("max_age: must be a duration such as 90d") from None


def _signature_format(marshaling: str) -> None:
    if marshaling not in _SIGNATURE_FORMATS:
        raise InvalidKeyRequest(f"marshaling: must be one of {', '.join(_SIGNATURE_FORMATS)}")
