from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tether._internal.ids import SAFE_ID_RULE, is_safe_id
from tether._internal.timeutil import format_time
from tether.audit import AuditLog
from tether.barrier import Barrier
from tether.errors import NotFoundError, TetherError
from tether.model import AuditEvent, Usage
from tether.providers import ProviderError
from tether.static._backend import StaticBackend, VaultOnly
from tether.static._model import SecretVersion, StaticCredential, Verification
from tether.static.errors import CredentialExists, InvalidCredential, NotAReader
from tether.store import Store, Tx

log = logging.getLogger("tether.static")

_TYPE = "credential"


def _sealed_id(credential_id: str, version: int) -> str:
    return f"credential/{credential_id}/v{version}"


class StaticSecrets:
    """Vaulted static secrets with staged rotation: new → tested → promoted → overlap →
    retired. Use of an old version is an alert naming the caller."""

    def __init__(
        self,
        store: Store,
        barrier: Barrier,
        audit: AuditLog,
        backend_for: Callable[[StaticCredential], StaticBackend],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._store = store
        self._barrier = barrier
        self._audit = audit
        self._backend_for = backend_for
        self._clock = clock
        self._lock = threading.Lock()  # one rotation at a time per process
        self._alerted: set[tuple[str, int, str]] = set()
        self.on_alert: list[Callable[[str], None]] = []
        #: Usage evidence: each read by a reader, each verify by a system checking one.
        self.on_used: list[Callable[[Usage], None]] = []
        #: Called in the transaction that records an exposure (governance's leak evidence
        #: commits with the alert, or neither does): (tx, credential, evidence, actor).
        self.on_exposed: list[Callable[[Tx, StaticCredential, str, str], None]] = []

    # -- records --
    def _fingerprint(self, secret: str) -> str:
        return hmac.new(self._barrier.token_key(), secret.encode(), hashlib.sha256).hexdigest()

    def _load(self, tx: Tx, credential_id: str) -> StaticCredential:
        spec = tx.estate_objects(_TYPE).get(credential_id)
        if spec is None:
            raise NotFoundError(f"no credential {credential_id!r}")
        return StaticCredential.from_spec(spec)

    def _save(self, tx: Tx, credential: StaticCredential) -> None:
        tx.put_estate_object(_TYPE, credential.id, credential.to_spec())

    def get(self, credential_id: str) -> StaticCredential:
        with self._store.read() as tx:
            return self._load(tx, credential_id)

    def all(self) -> list[StaticCredential]:
        with self._store.read() as tx:
            return [StaticCredential.from_spec(s) for s in tx.estate_objects(_TYPE).values()]

    def _alert(
        self,
        tx: Tx,
        kind: str,
        credential: StaticCredential,
        reason: str,
        details: Mapping[str, Any],
    ) -> None:
        self._audit.append(
            tx,
            [
                AuditEvent(
                    action=f"alert.{kind}",
                    actor="system:static",
                    result="alert",
                    owner_id=credential.owner_id,
                    reason=reason,
                    details={"credential": credential.id, **details},
                )
            ],
        )
        log.warning(reason, extra={"credential": credential.id, "alert": kind})
        for callback in self.on_alert:
            tx.on_commit(lambda callback=callback: callback(kind))  # type: ignore[misc]

    # -- lifecycle --
    def create(self, credential: StaticCredential, actor: str, value: str | None = None) -> None:
        if not is_safe_id(credential.id):
            raise InvalidCredential(f"id: is not a valid id: use {SAFE_ID_RULE}")
        if not credential.readers:
            raise InvalidCredential("readers: at least one identity must be allowed to read it")
        if credential.kind != VaultOnly.kind and (not credential.target or not credential.users):
            raise InvalidCredential(f"{credential.kind} needs a target and two users")
        with self._store.read() as tx:
            if credential.id in tx.estate_objects(_TYPE):
                raise CredentialExists(f"id: credential {credential.id!r} exists")
        secret = value or secrets.token_urlsafe(32)
        version = self._staged(credential, 1, secret)
        now = self._clock()
        created = replace(
            credential,
            last_rotated_at=now,
            versions=(replace(version, state="current", promoted_at=now),),
        )
        with self._store.transaction() as tx:
            self._barrier.put_secret(tx, _sealed_id(credential.id, 1), "static", secret.encode())
            self._save(tx, created)
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="credential.create",
                        actor=actor,
                        owner_id=credential.owner_id,
                        details={
                            "credential": credential.id,
                            "kind": credential.kind,
                            "readers": list(credential.readers),
                            "version": 1,
                        },
                    )
                ],
            )

    def _staged(self, credential: StaticCredential, number: int, secret: str) -> SecretVersion:
        backend = self._backend_for(credential)
        details = backend.stage(credential.id, number, secret)
        backend.test(credential.id, number, secret, details)
        return SecretVersion(
            number=number,
            state="staged",
            created_at=self._clock(),
            fingerprint=self._fingerprint(secret),
            details=details,
        )

    def rotate(
        self, credential_id: str, actor: str, reason: str, overlap: dt.timedelta | None = None
    ) -> SecretVersion:
        """Stage and test a new version, promote it; the old one stays valid for the overlap."""
        with self._lock:
            credential = self.get(credential_id)
            number = max(v.number for v in credential.versions) + 1
            secret = secrets.token_urlsafe(32)
            try:
                staged = self._staged(credential, number, secret)
            except ProviderError as exc:
                with self._store.transaction() as tx:
                    self._alert(
                        tx,
                        "rotation_failed",
                        credential,
                        f"rotation of {credential.id} failed: {exc}",
                        {"version": number},
                    )
                raise
            now = self._clock()
            window = credential.overlap if overlap is None else overlap
            versions = []
            retire_now = []
            for version in credential.versions:
                if version.state == "current":
                    versions.append(
                        replace(version, state="previous", overlap_ends_at=now + window)
                    )
                    continue
                if version.state == "previous":
                    retire_now.append(version)  # only one old version is ever valid
                versions.append(version)
            versions.append(replace(staged, state="current", promoted_at=now))
            with self._store.transaction() as tx:
                self._barrier.put_secret(
                    tx, _sealed_id(credential.id, number), "static", secret.encode()
                )
                self._save(tx, replace(credential, versions=tuple(versions), last_rotated_at=now))
                self._audit.append(
                    tx,
                    [
                        AuditEvent(
                            action="credential.rotate",
                            actor=actor,
                            owner_id=credential.owner_id,
                            reason=reason,
                            details={
                                "credential": credential.id,
                                "version": number,
                                "overlap_ends_at": format_time(now + window),
                            },
                        )
                    ],
                )
            for version in retire_now:
                self._retire(credential_id, version.number, "superseded")
        if window == dt.timedelta(0):
            self.sweep_one(credential_id)
        return staged

    def _retire(self, credential_id: str, number: int, reason: str) -> None:
        credential = self.get(credential_id)
        version = next(v for v in credential.versions if v.number == number)
        self._backend_for(credential).retire(credential.id, number, version.details)
        now = self._clock()
        with self._store.transaction() as tx:
            fresh = self._load(tx, credential_id)
            versions = tuple(
                replace(v, state="retired", retired_at=now)
                if v.number == number and v.state != "retired"
                else v
                for v in fresh.versions
            )
            self._save(tx, replace(fresh, versions=versions))
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="credential.retire",
                        actor="system:static",
                        owner_id=fresh.owner_id,
                        reason=reason,
                        details={"credential": credential_id, "version": number},
                    )
                ],
            )

    def exposed(self, credential_id: str, evidence: str, actor: str) -> SecretVersion:
        """A leaked secret is rotated at once and its version retired without overlap."""
        credential = self.get(credential_id)
        with self._store.transaction() as tx:
            self._alert(
                tx,
                "exposure",
                credential,
                f"{credential.id} was exposed: {evidence}",
                {"version": credential.current.number, "reported_by": actor},
            )
            for hook in self.on_exposed:
                hook(tx, credential, evidence, actor)
        return self.rotate(credential_id, actor, f"exposed: {evidence}", dt.timedelta(0))

    # -- use --
    def read(self, credential_id: str, identity_id: str) -> tuple[str, SecretVersion]:
        with self._store.transaction() as tx:
            credential = self._load(tx, credential_id)
            if identity_id not in credential.readers:
                raise NotAReader(f"identity {identity_id} may not read {credential_id}")
            version = credential.current
            secret = self._barrier.get_secret(tx, _sealed_id(credential_id, version.number))
            assert secret is not None
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="credential.read",
                        actor=f"workload:{identity_id}",
                        identity_id=identity_id,
                        owner_id=credential.owner_id,
                        details={"credential": credential_id, "version": version.number},
                    )
                ],
            )
        self._used(credential, (identity_id,), "credential.read")
        return secret.decode(), version

    def _used(
        self,
        credential: StaticCredential,
        readers: Sequence[str],
        action: str,
        resource: str | None = None,
    ) -> None:
        now = self._clock()
        for reader in readers:
            usage = Usage(
                reader, now, action, credential=f"credential:{credential.id}", resource=resource
            )
            for listener in self.on_used:
                listener(usage)

    def verify(self, credential_id: str, presented: str, caller: str) -> Verification:
        """For systems that check a presented secret with Tether: which version is it?"""
        fingerprint = self._fingerprint(presented)
        credential = self.get(credential_id)
        match = None
        for version in credential.versions:
            if hmac.compare_digest(version.fingerprint, fingerprint):
                match = version
        if match is None:
            return Verification(False, None, None)
        self._used(credential, credential.readers, "credential.verify", resource=caller)
        valid = match.state in ("current", "previous")
        if match.state != "current":
            with self._store.transaction() as tx:
                self._alert(
                    tx,
                    "old_version_used",
                    credential,
                    f"{caller} used version {match.number} of {credential.id} "
                    f"({'during the overlap' if valid else 'after it was retired'})",
                    {"version": match.number, "state": match.state, "caller": caller},
                )
        return Verification(valid, match.number, match.state)

    # -- the worker's part --
    def sweep(self) -> None:
        for credential in self.all():
            try:
                self.sweep_one(credential.id)
            except TetherError as exc:  # one credential's trouble must not stall the others
                log.warning(
                    "static sweep failed; will retry",
                    extra={"credential": credential.id, "error": exc.code},
                )

    def sweep_one(self, credential_id: str) -> None:
        credential = self.get(credential_id)
        now = self._clock()
        backend = self._backend_for(credential)
        for version in credential.versions:
            if version.state != "previous":
                continue
            users = backend.users_of(credential.id, version.number, version.details)
            with self._store.transaction() as tx:
                for use in users:
                    key = (credential.id, version.number, use.caller)
                    if key in self._alerted:
                        continue
                    self._alerted.add(key)
                    self._alert(
                        tx,
                        "old_version_in_use",
                        credential,
                        f"{use.caller} still uses version {version.number} of {credential.id}",
                        {"version": version.number, "caller": use.caller, **use.details},
                    )
            if version.overlap_ends_at is not None and version.overlap_ends_at <= now:
                self._retire(credential.id, version.number, "overlap ended")
        if (
            credential.rotate_every is not None
            and credential.last_rotated_at + credential.rotate_every <= now
        ):
            self.rotate(credential.id, "system:schedule", "rotation interval reached")
