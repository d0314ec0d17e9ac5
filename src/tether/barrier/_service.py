from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tether.barrier import shamir
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


@dataclass(frozen=True, slots=True)
class SealConfig:
    shares: int
    threshold: int
    dev: bool = False


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

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._keyring: Keyring | None = None
        # Held while unsealed, as Vault does, so the keyring can be re-wrapped on rotation.
        self._root_key: bytes | None = None
        self._pending: list[bytes] = []

    # -- state --
    def _config(self) -> SealConfig | None:
        with self._store.read() as tx:
            raw = tx.get_meta(_CONFIG_KEY)
        return None if raw is None else SealConfig(**json.loads(raw))

    @property
    def sealed(self) -> bool:
        return self._keyring is None

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
            progress=len(self._pending),
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
            tx.put_meta(_KEYRING_KEY, keyring.wrap(root_key))
            tx.put_meta(
                _CONFIG_KEY,
                json.dumps({"shares": shares, "threshold": threshold, "dev": dev}).encode(),
            )
            self._keyring = keyring
            self._root_key = root_key
            self._pending.clear()
            return shamir.split(root_key, shares, threshold)

    def submit_share(self, share_text: str) -> BarrierStatus:
        share = decode_share(share_text)
        with self._lock:
            config = self._config()
            if config is None:
                raise NotInitialized("Tether is not initialized: run `tether init`")
            if self._keyring is not None:
                return self.status()
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

    def unseal_with_root_key(self, root_key: bytes) -> None:
        with self._lock:
            self._open(root_key)

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

    def seal(self) -> None:
        with self._lock:
            self._keyring = None
            self._root_key = None
            self._pending.clear()

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

    def unseal_from_file(self, key_file: Path) -> None:
        self.submit_share(read_private_file(key_file).decode())


def write_private_file(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, refusing to follow an existing symlink."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def read_private_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise UnsealFailed(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    return path.read_bytes()
