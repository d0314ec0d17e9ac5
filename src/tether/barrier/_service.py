from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tether._internal.files import write_private_file
from tether.barrier import shamir
from tether.barrier._guard import FailureSink, UnsealGuard
from tether.barrier.errors import (
    AlreadyInitialized,
    DecryptionFailed,
    InvalidShare,
    NotInitialized,
    Sealed,
    UnknownTerm,
    UnsealFailed,
)
from tether.barrier.keyring import Keyring
from tether.store import SealedRecord, Store, Tx

_CONFIG_KEY = "barrier/config"
_KEYRING_KEY = "barrier/keyring"
_ROOT_KEY_BYTES = 32
_COMMITMENT_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class SealConfig:
    shares: int
    threshold: int
    dev: bool = False
    #: Key of the share commitments; None in configs written before commitments existed.
    commitment_key: bytes | None = None
    #: Share x coordinate -> HMAC-SHA256(commitment_key, share). Never the share itself.
    commitments: Mapping[int, bytes] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: bytes) -> SealConfig:
        doc = json.loads(raw)
        key = doc.get("commitment_key")
        return cls(
            shares=doc["shares"],
            threshold=doc["threshold"],
            dev=doc.get("dev", False),
            commitment_key=None if key is None else base64.b64decode(key),
            commitments={
                int(x): bytes.fromhex(digest) for x, digest in doc.get("commitments", {}).items()
            },
        )

    def to_json(self) -> bytes:
        doc: dict[str, object] = {
            "shares": self.shares,
            "threshold": self.threshold,
            "dev": self.dev,
        }
        if self.commitment_key is not None:
            doc["commitment_key"] = base64.b64encode(self.commitment_key).decode()
            doc["commitments"] = {str(x): d.hex() for x, d in sorted(self.commitments.items())}
        return json.dumps(doc).encode()


def _commitment(key: bytes, share: bytes) -> bytes:
    return hmac.new(key, share, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class BarrierStatus:
    initialized: bool
    sealed: bool
    shares: int | None
    threshold: int | None
    progress: int
    term: int | None
    dev: bool


def encode_share(share: bytes) -> str:
    return base64.b64encode(share).decode()


def decode_share(text: str) -> bytes:
    try:
        share = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidShare("the share is not valid base64") from None
    if len(share) != _ROOT_KEY_BYTES + 1 or share[-1] == 0:
        raise InvalidShare("the share has the wrong length or form")
    return share


class Barrier:
    """Holds the unsealed keyring in memory and nowhere else.

    Sealed, it can say only whether it is initialized and how far unsealing has got.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._keyring: Keyring | None = None
        # Held while unsealed, as Vault does, so the keyring can be re-wrapped on rotation.
        self._root_key: bytes | None = None
        self._pending: list[bytes] = []
        # A worker of a node does not combine shares (its supervisor does): this is the
        # supervisor's progress, mirrored so any worker's status shows it.
        self._mirrored_progress: int | None = None
        self.unseal_guard = UnsealGuard(clock)

    # -- state --
    def _config(self) -> SealConfig | None:
        with self._store.read() as tx:
            raw = tx.get_meta(_CONFIG_KEY)
        return None if raw is None else SealConfig.from_json(raw)

    @property
    def sealed(self) -> bool:
        return self._keyring is None

    @property
    def progress(self) -> int:
        """Shares given toward unsealing so far (a worker's: its supervisor's)."""
        mirrored = self._mirrored_progress
        return len(self._pending) if mirrored is None else mirrored

    def keyring(self) -> Keyring:
        keyring = self._keyring
        if keyring is None:
            raise Sealed("Tether is sealed: unseal it with `tether unseal SHARE`")
        return keyring

    def status(self) -> BarrierStatus:
        config = self._config()
        keyring = self._keyring
        return BarrierStatus(
            initialized=config is not None,
            sealed=keyring is None,
            shares=None if config is None else config.shares,
            threshold=None if config is None else config.threshold,
            progress=self.progress,
            term=None if keyring is None else keyring.active_term,
            dev=bool(config and config.dev),
        )

    # -- lifecycle --
    def initialize(self, tx: Tx, shares: int, threshold: int, dev: bool = False) -> list[bytes]:
        """Create the root key and keyring inside `tx`; return the root key's shares.

        The barrier is left unsealed, so the caller can create the first token in the
        same transaction. The root key itself is not kept.
        """
        if not (1 <= threshold <= shares <= 255) or (shares > 1 and threshold < 2):
            raise InvalidShare("shares must be 1..255 and threshold 2..shares (or both 1)")
        with self._lock:
            if tx.get_meta(_CONFIG_KEY) is not None:
                raise AlreadyInitialized("Tether is already initialized")
            root_key = os.urandom(_ROOT_KEY_BYTES)
            keyring = Keyring.generate()
            parts = shamir.split(root_key, shares, threshold)
            commitment_key = os.urandom(_COMMITMENT_KEY_BYTES)
            config = SealConfig(
                shares=shares,
                threshold=threshold,
                dev=dev,
                commitment_key=commitment_key,
                commitments={p[-1]: _commitment(commitment_key, p) for p in parts},
            )
            tx.put_meta(_KEYRING_KEY, keyring.wrap(root_key))
            tx.put_meta(_CONFIG_KEY, config.to_json())
            self._keyring = keyring
            self._root_key = root_key
            self._pending.clear()
            return parts

    def submit_share(
        self, share_text: str, source: str | None = None, record: FailureSink | None = None
    ) -> BarrierStatus:
        """Add one share toward unsealing.

        With a `source`, failed attempts are rate-limited per source (a refused attempt's
        share is not read) and summarized to `record` as they fall due. A share that is
        not one of those made at init is refused on its own and leaves progress as it was.
        """
        if source is None:
            return self._submit(self._config(), share_text)
        # The guard's lock, not the barrier's, is held while summaries are written: a
        # writer holding the store (init, rotate) may be waiting for the barrier's lock.
        with self.unseal_guard.attempt(source, record):
            config = self._config()
            try:
                return self._submit(config, share_text)
            except (InvalidShare, UnsealFailed) as exc:
                if config is not None:  # before init there is nothing to guard
                    self.unseal_guard.failed(source, str(exc), record)
                raise

    def _submit(self, config: SealConfig | None, share_text: str) -> BarrierStatus:
        share = decode_share(share_text)
        if config is None:
            raise NotInitialized("Tether is not initialized: run `tether init`")
        with self._lock:
            if self._keyring is not None:
                return self.status()
            if config.commitment_key is not None:
                expected = config.commitments.get(share[-1])
                actual = _commitment(config.commitment_key, share)
                if expected is None or not hmac.compare_digest(expected, actual):
                    raise InvalidShare("this share is not one of the shares made at init")
            if any(hmac.compare_digest(share, seen) for seen in self._pending):
                raise InvalidShare("this share was already given")
            if self._pending and len(self._pending[0]) != len(share):
                raise InvalidShare("the share does not match the others")
            self._pending.append(share)
            if len(self._pending) >= config.threshold:
                parts, self._pending = self._pending, []
                try:
                    root_key = shamir.combine(parts)
                except ValueError:
                    raise UnsealFailed("the shares do not fit together; start again") from None
                self._open(root_key)
            return self.status()

    def _open(self, root_key: bytes) -> None:
        with self._store.read() as tx:
            wrapped = tx.get_meta(_KEYRING_KEY)
        if wrapped is None:
            raise NotInitialized("Tether is not initialized: run `tether init`")
        try:
            self._keyring = Keyring.unwrap(root_key, wrapped)
            self._root_key = root_key
        except DecryptionFailed:
            raise UnsealFailed(
                "the shares did not reconstruct the root key; unsealing starts again"
            ) from None

    def open(self, root_key: bytes) -> None:
        """Open with the root key itself: a worker of a node, handed the key by its
        supervisor over their private channel. Progress toward unsealing starts again."""
        with self._lock:
            self._pending.clear()
            self._open(root_key)

    def root_key(self) -> bytes:
        """The root key while unsealed: for the supervisor of a node to hand to its
        workers over their private channels, and for nothing else."""
        with self._lock:
            root_key = self._root_key
        if root_key is None:
            raise Sealed("Tether is sealed: unseal it with `tether unseal SHARE`")
        return root_key

    def mirror_progress(self, progress: int) -> None:
        """Show `progress` (shares given so far, counted by the supervisor) in `status`."""
        with self._lock:
            self._mirrored_progress = progress

    def seal(self) -> bool:
        """Drop every key; True if the barrier was open until now."""
        with self._lock:
            was_open = self._keyring is not None
            self._keyring = None
            self._root_key = None
            self._pending.clear()
            return was_open

    def reset_progress(self) -> None:
        with self._lock:
            self._pending.clear()

    # -- records --
    def encrypt(self, record_id: str, purpose: str, plaintext: bytes) -> SealedRecord:
        term, blob = self.keyring().encrypt(record_id, plaintext)
        return SealedRecord(id=record_id, purpose=purpose, term=term, ciphertext=blob)

    def decrypt(self, record: SealedRecord) -> bytes:
        try:
            return self.keyring().decrypt(record.id, record.ciphertext)
        except UnknownTerm:
            # Another replica rotated the keyring since this one unsealed: re-read it once.
            self.reload()
            return self.keyring().decrypt(record.id, record.ciphertext)

    def put_secret(self, tx: Tx, record_id: str, purpose: str, plaintext: bytes) -> None:
        tx.put_sealed(self.encrypt(record_id, purpose, plaintext))

    def get_secret(self, tx: Tx, record_id: str) -> bytes | None:
        record = tx.get_sealed(record_id)
        return None if record is None else self.decrypt(record)

    # -- keyring rotation --
    def rotate(self, tx: Tx) -> int:
        """Add a keyring term inside `tx`; new writes use it once `tx` commits.

        The new keyring is derived from the one stored in `tx` and installed only on
        commit: a rolled-back rotation never leaves this node writing under a term that
        was not stored.
        """
        with self._lock:
            self.keyring()  # sealed: refuse
            root_key = self._root_key
            assert root_key is not None
        wrapped = tx.get_meta(_KEYRING_KEY)
        if wrapped is None:
            raise NotInitialized("Tether is not initialized: run `tether init`")
        rotated = Keyring.unwrap(root_key, wrapped).rotated()
        tx.put_meta(_KEYRING_KEY, rotated.wrap(root_key))
        tx.on_commit(lambda: self._install(rotated))
        return rotated.active_term

    def _install(self, keyring: Keyring) -> None:
        with self._lock:
            current = self._keyring
            if current is not None and current.active_term < keyring.active_term:
                self._keyring = keyring

    def rewrap(self, batch: int = 500) -> int:
        """Re-encrypt up to `batch` records written under older terms. Returns how many."""
        keyring = self.keyring()
        moved = 0
        with self._store.transaction() as tx:
            for record in tx.sealed_below_term(keyring.active_term, batch):
                plaintext = keyring.decrypt(record.id, record.ciphertext)
                term, blob = keyring.encrypt(record.id, plaintext)
                tx.put_sealed(SealedRecord(record.id, record.purpose, term, blob))
                moved += 1
        return moved

    def reload(self) -> None:
        """Re-read the keyring after another replica rotated it."""
        with self._lock:
            if self._root_key is not None:
                self._open(self._root_key)

    def token_key(self) -> bytes:
        return self.keyring().token_key

    def audit_key(self) -> bytes:
        return self.keyring().audit_key

    def initialize_dev(self, tx: Tx, key_file: Path) -> None:
        """Dev mode: one share, kept in a file only its owner can read, for auto-unseal."""
        (share,) = self.initialize(tx, shares=1, threshold=1, dev=True)
        write_private_file(key_file, encode_share(share).encode())

    def unseal_from_file(self, key_file: Path) -> BarrierStatus:
        """Unseal from a file only its owner can read that holds shares, one a line:
        dev mode's one share, or the threshold of a production node's auto-unseal file.

        Shares from a file are not rate-limited (no remote source gives them); a file that
        does not unseal leaves progress where it was before."""
        shares = read_private_file(key_file).decode().split()
        if not shares:
            raise UnsealFailed(f"{key_file} holds no unseal share")
        config = self._config()
        with self._lock:
            if self._keyring is not None:
                return self.status()
            self._pending.clear()
            for number, share in enumerate(shares, 1):
                try:
                    status = self._submit(config, share)
                except InvalidShare as exc:
                    self._pending.clear()
                    raise InvalidShare(f"{key_file}, share {number}: {exc}") from None
                if not status.sealed:
                    return status
            self._pending.clear()
        threshold = config.threshold if config else 1
        raise UnsealFailed(f"{key_file} holds {len(shares)} share(s); unsealing takes {threshold}")


def read_private_file(path: Path) -> bytes:
    """A key file's bytes, if only this user can read (or change) it."""
    info = path.stat()
    mode = info.st_mode
    if info.st_uid != os.geteuid():
        raise UnsealFailed(f"{path} is not owned by the user Tether runs as; chown it")
    if mode & 0o077:
        raise UnsealFailed(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    return path.read_bytes()
