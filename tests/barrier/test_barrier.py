"""The barrier on every store backend: init, seal, unseal by shares, secrets, rotation, dev."""

from __future__ import annotations

import base64
import itertools
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.persisted import persisted_sql_bytes
from tether.barrier import (
    AlreadyInitialized,
    Barrier,
    DecryptionFailed,
    InvalidShare,
    NotInitialized,
    Sealed,
    UnsealFailed,
    encode_share,
    shamir,
)
from tether.store import SealedRecord, Store
from tether.store._memory import MemoryStore


@pytest.fixture
def barrier(store: Store) -> Barrier:
    return Barrier(store)


def _unseal(barrier: Barrier, shares: list[str]) -> None:
    for share in shares:
        barrier.submit_share(share)
    assert not barrier.sealed


def _foreign_shares() -> list[str]:
    """Shares from another Tether's initialization."""
    other_store = MemoryStore()
    other = Barrier(other_store)
    with other_store.transaction() as tx:
        return [encode_share(p) for p in other.initialize(tx, shares=5, threshold=3)]


def _all_records(store: Store) -> list[SealedRecord]:
    with store.read() as tx:
        return tx.sealed_below_term(2**31 - 1, 1_000_000)


def _persisted_bytes(store: Store) -> bytes:
    """Everything the store has written, as an attacker holding the database would see it."""
    engine = getattr(store, "engine", None)
    if engine is None:  # the memory store: what it would hand to any reader
        with store.read() as tx:
            chunks = [tx.get_meta(k) or b"" for k in ("barrier/config", "barrier/keyring")]
            chunks += [r.id.encode() + r.ciphertext for r in _all_records(store)]
        return b"\x00".join(chunks)
    return persisted_sql_bytes(engine)


def _renderings(secret: bytes) -> Iterator[bytes]:
    yield secret
    yield secret.hex().encode()
    yield base64.b64encode(secret)


# -- status and initialization --


def test_a_new_store_is_not_initialized_and_sealed(barrier: Barrier) -> None:
    status = barrier.status()
    assert not status.initialized
    assert status.sealed
    assert (status.shares, status.threshold, status.term) == (None, None, None)
    assert status.progress == 0
    assert not status.dev


def test_initialize_returns_shares_and_leaves_the_barrier_unsealed(
    store: Store, barrier: Barrier
) -> None:
    with store.transaction() as tx:
        parts = barrier.initialize(tx, shares=5, threshold=3)
        # Unsealed inside the same transaction, so the first token can be made there.
        barrier.put_secret(tx, "first", "test", b"made during init")
    assert len(parts) == 5
    assert len(set(parts)) == 5
    status = barrier.status()
    assert status.initialized
    assert not status.sealed
    assert (status.shares, status.threshold, status.term) == (5, 3, 1)
    with store.read() as tx:
        assert barrier.get_secret(tx, "first") == b"made during init"


def test_seal_then_unseal_with_three_of_five_shares(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    status = barrier.status()
    assert status.initialized
    assert status.sealed
    assert status.term is None

    first = barrier.submit_share(shares[4])
    assert (first.sealed, first.progress, first.threshold) == (True, 1, 3)
    second = barrier.submit_share(shares[1])
    assert (second.sealed, second.progress) == (True, 2)
    third = barrier.submit_share(shares[2])
    assert not third.sealed
    assert third.progress == 0
    assert third.term == 1
    assert not barrier.sealed


@pytest.mark.parametrize("chosen", [(0, 1, 2), (2, 3, 4), (4, 0, 2), (1, 3, 4)])
def test_any_three_shares_unseal_a_restarted_node(
    store: Store, shares: list[str], chosen: tuple[int, int, int]
) -> None:
    writer = Barrier(store)
    _unseal(writer, shares[:3])
    with store.transaction() as tx:
        writer.put_secret(tx, "kept", "test", b"across restarts")
    restarted = Barrier(store)
    assert restarted.sealed
    _unseal(restarted, [shares[i] for i in chosen])
    with store.read() as tx:
        assert restarted.get_secret(tx, "kept") == b"across restarts"


def test_two_shares_leave_it_sealed(barrier: Barrier, shares: list[str]) -> None:
    barrier.submit_share(shares[0])
    status = barrier.submit_share(shares[3])
    assert status.sealed
    assert status.progress == 2
    with pytest.raises(Sealed):
        barrier.encrypt("r", "test", b"x")


def test_shares_from_another_initialization_are_refused_one_by_one(
    barrier: Barrier, shares: list[str]
) -> None:
    barrier.submit_share(shares[0])
    for foreign in _foreign_shares():
        with pytest.raises(InvalidShare, match="not one of the shares made at init"):
            barrier.submit_share(foreign)
        status = barrier.status()
        assert (status.sealed, status.progress) == (True, 1)
    _unseal(barrier, shares[2:4])


def _bogus_shares(good: str) -> list[str]:
    """Well-formed shares that were never made: right length, non-zero x."""
    x = base64.b64decode(good)[-1]
    other_x = x % 255 + 1
    return [
        base64.b64encode(os.urandom(32) + bytes([x])).decode(),  # a real share's x
        base64.b64encode(os.urandom(32) + bytes([other_x])).decode(),
        base64.b64encode(bytes(32) + b"\x01").decode(),
        base64.b64encode(bytes([255]) * 33).decode(),
    ]


def test_a_well_formed_bogus_share_is_refused_and_progress_is_unchanged(
    barrier: Barrier, shares: list[str]
) -> None:
    barrier.submit_share(shares[0])
    barrier.submit_share(shares[1])
    for bogus in [*_bogus_shares(shares[2]), *_bogus_shares(shares[0])]:
        with pytest.raises(InvalidShare, match="not one of the shares made at init") as caught:
            barrier.submit_share(bogus)
        assert bogus not in str(caught.value)
        status = barrier.status()
        assert (status.sealed, status.progress) == (True, 2)
    third = barrier.submit_share(shares[3])
    assert not third.sealed


@pytest.mark.parametrize("order", list(itertools.permutations([1, 3, 4])))
def test_the_right_shares_unseal_in_any_order_after_bogus_ones(
    barrier: Barrier, shares: list[str], order: tuple[int, int, int]
) -> None:
    for index in order:
        with pytest.raises(InvalidShare):
            barrier.submit_share(_bogus_shares(shares[index])[0])
        barrier.submit_share(shares[index])
    assert not barrier.sealed


def test_the_config_holds_a_commitment_per_share_and_never_a_share(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    with store.read() as tx:
        raw = tx.get_meta("barrier/config")
    assert raw is not None
    doc = json.loads(raw)
    assert len(base64.b64decode(doc["commitment_key"])) == 32
    xs = {str(base64.b64decode(s)[-1]) for s in shares}
    assert set(doc["commitments"]) == xs
    assert all(len(bytes.fromhex(d)) == 32 for d in doc["commitments"].values())
    persisted = _persisted_bytes(store)
    for share in shares:
        raw_share = base64.b64decode(share)
        for rendering in [*_renderings(raw_share), *_renderings(raw_share[:-1])]:
            assert rendering not in persisted


def _make_legacy(store: Store) -> None:
    """Rewrite the config as Tether wrote it before share commitments existed."""
    with store.transaction() as tx:
        raw = tx.get_meta("barrier/config")
        assert raw is not None
        doc = json.loads(raw)
        legacy = {k: doc[k] for k in ("shares", "threshold", "dev")}
        tx.put_meta("barrier/config", json.dumps(legacy).encode())


def test_a_legacy_config_without_commitments_still_unseals(store: Store, shares: list[str]) -> None:
    _make_legacy(store)
    barrier = Barrier(store)
    assert barrier.status().shares == 5
    _unseal(barrier, [shares[4], shares[0], shares[2]])


def test_a_legacy_config_falls_back_to_checking_shares_when_combined(
    store: Store, shares: list[str]
) -> None:
    _make_legacy(store)
    barrier = Barrier(store)
    foreign = _foreign_shares()
    barrier.submit_share(shares[0])
    barrier.submit_share(foreign[0])  # nothing to check it against on its own
    with pytest.raises(UnsealFailed):
        barrier.submit_share(shares[1])
    assert barrier.status().progress == 0
    assert barrier.sealed
    _unseal(barrier, [shares[1], shares[3], shares[0]])


def _malformed_shares(good: str) -> list[str]:
    raw = base64.b64decode(good)
    return [
        "",
        "not base64 at all!",
        good[:-4],  # valid base64, too short
        base64.b64encode(raw + b"\x01").decode(),  # too long
        base64.b64encode(raw[:-1] + b"\x00").decode(),  # x coordinate zero
        base64.b64encode(os.urandom(16)).decode(),
    ]


def test_a_malformed_share_is_refused_and_progress_is_kept(
    barrier: Barrier, shares: list[str]
) -> None:
    barrier.submit_share(shares[0])
    for bad in _malformed_shares(shares[1]):
        with pytest.raises(InvalidShare):
            barrier.submit_share(bad)
        assert barrier.status().progress == 1
    barrier.submit_share(shares[1])
    barrier.submit_share(shares[2])
    assert not barrier.sealed


def test_the_same_share_twice_is_refused(barrier: Barrier, shares: list[str]) -> None:
    barrier.submit_share(shares[0])
    with pytest.raises(InvalidShare, match="already"):
        barrier.submit_share(shares[0])
    with pytest.raises(InvalidShare, match="already"):
        barrier.submit_share(f"  {shares[0]}\n")
    status = barrier.status()
    assert status.progress == 1
    assert status.sealed
    barrier.submit_share(shares[1])
    barrier.submit_share(shares[2])
    assert not barrier.sealed


def test_a_share_submitted_while_unsealed_changes_nothing(
    barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    status = barrier.submit_share(shares[3])
    assert not status.sealed
    assert status.progress == 0


def test_shares_before_initialization_are_refused(barrier: Barrier) -> None:
    with pytest.raises(NotInitialized):
        barrier.submit_share(_foreign_shares()[0])
    assert not barrier.status().initialized


def test_initialize_twice_is_refused_and_keeps_the_first_keyring(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    with store.transaction() as tx:
        barrier.put_secret(tx, "kept", "test", b"first keyring")
    for node in (barrier, Barrier(store)):
        with pytest.raises(AlreadyInitialized), store.transaction() as tx:
            node.initialize(tx, shares=5, threshold=3)
    barrier.seal()
    _unseal(barrier, shares[1:4])
    with store.read() as tx:
        assert barrier.get_secret(tx, "kept") == b"first keyring"
    assert barrier.status().shares == 5


@pytest.mark.parametrize(
    ("n", "threshold"), [(0, 0), (3, 1), (2, 3), (256, 2), (5, 0), (1, 2), (-1, 1)]
)
def test_invalid_seal_parameters_are_refused_and_nothing_is_written(
    store: Store, barrier: Barrier, n: int, threshold: int
) -> None:
    with pytest.raises(InvalidShare), store.transaction() as tx:
        barrier.initialize(tx, shares=n, threshold=threshold)
    assert not barrier.status().initialized
    assert barrier.sealed


# -- sealed means no secret in or out --


def test_a_sealed_barrier_refuses_every_use_of_a_key(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    record = barrier.encrypt("r", "test", b"sealed away")
    barrier.seal()
    assert barrier.status().term is None
    with pytest.raises(Sealed):
        barrier.encrypt("r", "test", b"x")
    with pytest.raises(Sealed):
        barrier.decrypt(record)
    with pytest.raises(Sealed):
        barrier.keyring()
    with pytest.raises(Sealed):
        barrier.token_key()
    with pytest.raises(Sealed):
        barrier.audit_key()
    with pytest.raises(Sealed):
        barrier.rewrap()
    with pytest.raises(Sealed), store.transaction() as tx:
        barrier.put_secret(tx, "r", "test", b"x")
    with pytest.raises(Sealed), store.transaction() as tx:
        barrier.rotate(tx)
    with store.transaction() as tx:
        tx.put_sealed(record)
    with pytest.raises(Sealed), store.read() as tx:
        barrier.get_secret(tx, "r")


def test_an_uninitialized_barrier_refuses_encryption(barrier: Barrier) -> None:
    with pytest.raises(Sealed):
        barrier.encrypt("r", "test", b"x")


def test_sealing_forgets_unseal_progress(barrier: Barrier, shares: list[str]) -> None:
    barrier.submit_share(shares[0])
    barrier.seal()
    assert barrier.status().progress == 0
    barrier.submit_share(shares[1])
    barrier.reset_progress()
    assert barrier.status().progress == 0


# -- secrets --


def test_put_and_get_secret_round_trip_and_store_no_plaintext(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    secrets_by_id = {f"lease/{i}/password": os.urandom(24) for i in range(5)}
    with store.transaction() as tx:
        for record_id, value in secrets_by_id.items():
            barrier.put_secret(tx, record_id, "password", value)
    with store.read() as tx:
        for record_id, value in secrets_by_id.items():
            assert barrier.get_secret(tx, record_id) == value
            row = tx.get_sealed(record_id)
            assert row is not None
            assert row.purpose == "password"
            assert row.term == 1
            assert value not in row.ciphertext
        assert barrier.get_secret(tx, "no/such/record") is None

    persisted = _persisted_bytes(store)
    keyring = barrier.keyring()
    root_key = shamir.combine([base64.b64decode(s) for s in shares[:3]])
    at_rest = [
        *secrets_by_id.values(),
        *keyring.terms.values(),
        keyring.audit_key,
        keyring.token_key,
        root_key,
    ]
    for secret in at_rest:
        for rendering in _renderings(secret):
            assert rendering not in persisted


def test_overwriting_a_secret_replaces_it(store: Store, barrier: Barrier) -> None:
    with store.transaction() as tx:
        barrier.initialize(tx, shares=1, threshold=1)
        barrier.put_secret(tx, "r", "test", b"old")
    with store.transaction() as tx:
        barrier.put_secret(tx, "r", "test", b"new")
    with store.read() as tx:
        assert barrier.get_secret(tx, "r") == b"new"


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(store: Store, barrier: Barrier) -> None:
    with store.transaction() as tx:
        barrier.initialize(tx, shares=1, threshold=1)
        barrier.put_secret(tx, "identity/a", "password", os.urandom(16))
    with store.transaction() as tx:
        stolen = tx.get_sealed("identity/a")
        assert stolen is not None
        tx.put_sealed(SealedRecord("identity/b", stolen.purpose, stolen.term, stolen.ciphertext))
    with pytest.raises(DecryptionFailed), store.read() as tx:
        barrier.get_secret(tx, "identity/b")


def test_a_tampered_row_does_not_decrypt(store: Store, barrier: Barrier) -> None:
    with store.transaction() as tx:
        barrier.initialize(tx, shares=1, threshold=1)
        barrier.put_secret(tx, "r", "password", os.urandom(16))
    with store.transaction() as tx:
        row = tx.get_sealed("r")
        assert row is not None
        flipped = bytearray(row.ciphertext)
        flipped[-1] ^= 0x01
        tx.put_sealed(SealedRecord(row.id, row.purpose, row.term, bytes(flipped)))
    with pytest.raises(DecryptionFailed), store.read() as tx:
        barrier.get_secret(tx, "r")


def test_a_rolled_back_secret_write_leaves_nothing(store: Store, barrier: Barrier) -> None:
    with store.transaction() as tx:
        barrier.initialize(tx, shares=1, threshold=1)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        barrier.put_secret(tx, "r", "test", b"never")
        raise RuntimeError("the operation failed after the write")
    with store.read() as tx:
        assert barrier.get_secret(tx, "r") is None


# -- keyring rotation --


def test_rotate_then_rewrap_moves_every_record_and_survives_seal_unseal(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    values = {f"r{i:02d}": os.urandom(16) for i in range(7)}
    with store.transaction() as tx:
        for record_id, value in values.items():
            barrier.put_secret(tx, record_id, "test", value)

    with store.transaction() as tx:
        assert barrier.rotate(tx) == 2
    assert barrier.status().term == 2
    with store.transaction() as tx:
        barrier.put_secret(tx, "after-rotate", "test", b"new term")
        values["after-rotate"] = b"new term"
    with store.read() as tx:
        row = tx.get_sealed("after-rotate")
        assert row is not None
        assert row.term == 2
        # Old records still read before they are moved.
        assert barrier.get_secret(tx, "r00") == values["r00"]

    moved = [barrier.rewrap(batch=3) for _ in range(4)]
    assert moved == [3, 3, 1, 0]
    records = _all_records(store)
    assert {r.id for r in records} == set(values)
    assert {r.term for r in records} == {2}

    barrier.seal()
    _unseal(barrier, shares[2:])
    assert barrier.status().term == 2
    with store.read() as tx:
        for record_id, value in values.items():
            assert barrier.get_secret(tx, record_id) == value

    restarted = Barrier(store)
    _unseal(restarted, shares[:3])
    assert restarted.status().term == 2
    assert restarted.keyring().token_key == barrier.keyring().token_key
    with store.read() as tx:
        assert restarted.get_secret(tx, "r03") == values["r03"]


def test_rotating_twice_keeps_every_term_readable(store: Store, barrier: Barrier) -> None:
    with store.transaction() as tx:
        shares = [encode_share(p) for p in barrier.initialize(tx, shares=3, threshold=2)]
        barrier.put_secret(tx, "t1", "test", b"one")
    with store.transaction() as tx:
        barrier.rotate(tx)
        barrier.put_secret(tx, "t2", "test", b"two")
    with store.transaction() as tx:
        assert barrier.rotate(tx) == 3
        barrier.put_secret(tx, "t3", "test", b"three")
    barrier.seal()
    _unseal(barrier, shares[1:])
    with store.read() as tx:
        assert [barrier.get_secret(tx, r) for r in ("t1", "t2", "t3")] == [b"one", b"two", b"three"]
    # A rotation takes effect when its transaction commits, so t2 was written under
    # term 1 and t3 under term 2: all three move to term 3.
    assert barrier.rewrap() == 3
    assert {r.term for r in _all_records(store)} == {3}


def test_reload_picks_up_a_rotation_made_by_another_replica(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    replica = Barrier(store)
    _unseal(replica, shares[2:])
    with store.transaction() as tx:
        replica.rotate(tx)
        replica.put_secret(tx, "from-replica", "test", b"term two")
    barrier.reload()
    assert barrier.status().term == 2
    with store.read() as tx:
        assert barrier.get_secret(tx, "from-replica") == b"term two"


def test_a_rolled_back_rotation_does_not_strand_new_secrets(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    _unseal(barrier, shares[:3])
    with pytest.raises(RuntimeError), store.transaction() as tx:
        barrier.rotate(tx)
        raise RuntimeError("e.g. the audit entry for the rotation could not be written")
    with store.transaction() as tx:
        barrier.put_secret(tx, "written-after", "test", b"must survive a restart")
    restarted = Barrier(store)
    _unseal(restarted, shares[:3])
    with store.read() as tx:
        assert restarted.get_secret(tx, "written-after") == b"must survive a restart"


# -- dev mode --


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dev_mode_writes_an_owner_only_key_file_and_unseals_from_it(
    store: Store, barrier: Barrier, tmp_path: Path
) -> None:
    key_file = tmp_path / "dev" / "unseal.key"
    old_umask = os.umask(0)
    try:
        with store.transaction() as tx:
            barrier.initialize_dev(tx, key_file)
    finally:
        os.umask(old_umask)
    assert _mode(key_file) == 0o600
    status = barrier.status()
    assert status.dev
    assert (status.shares, status.threshold) == (1, 1)
    assert not status.sealed
    with store.read() as tx:
        raw = tx.get_meta("barrier/config")
    assert raw is not None
    assert set(json.loads(raw)["commitments"]) == {"1"}

    with store.transaction() as tx:
        barrier.put_secret(tx, "r", "test", b"dev secret")
    barrier.seal()
    barrier.unseal_from_file(key_file)
    assert not barrier.sealed

    restarted = Barrier(store)
    restarted.unseal_from_file(key_file)
    with store.read() as tx:
        assert restarted.get_secret(tx, "r") == b"dev secret"


def test_dev_key_file_tightens_an_existing_loose_file(
    store: Store, barrier: Barrier, tmp_path: Path
) -> None:
    key_file = tmp_path / "unseal.key"
    key_file.write_bytes(b"stale")
    key_file.chmod(0o644)
    with store.transaction() as tx:
        barrier.initialize_dev(tx, key_file)
    assert _mode(key_file) == 0o600
    barrier.seal()
    barrier.unseal_from_file(key_file)
    assert not barrier.sealed


def test_dev_key_file_is_not_written_through_a_symlink(
    store: Store, barrier: Barrier, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    key_file = tmp_path / "unseal.key"
    key_file.symlink_to(target)
    with pytest.raises(OSError), store.transaction() as tx:
        barrier.initialize_dev(tx, key_file)
    assert target.read_bytes() == b"untouched"
    assert not barrier.status().initialized


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o620], ids=oct)
def test_a_key_file_others_can_access_is_refused(
    store: Store, barrier: Barrier, tmp_path: Path, mode: int
) -> None:
    key_file = tmp_path / "unseal.key"
    with store.transaction() as tx:
        barrier.initialize_dev(tx, key_file)
    barrier.seal()
    key_file.chmod(mode)
    with pytest.raises(UnsealFailed, match="chmod 600"):
        barrier.unseal_from_file(key_file)
    assert barrier.sealed
    key_file.chmod(0o400)
    barrier.unseal_from_file(key_file)
    assert not barrier.sealed
