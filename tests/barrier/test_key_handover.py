"""The barrier of a node of several processes: a worker opened with the root key its
supervisor hands it, progress mirrored from the supervisor, and a production node's key
file of shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.barrier import Barrier, InvalidShare, NotInitialized, Sealed, UnsealFailed
from tether.store import SealedRecord, Store


@pytest.fixture
def barrier(store: Store) -> Barrier:
    return Barrier(store)


def _key_file(path: Path, shares: list[str], mode: int = 0o600) -> Path:
    path.write_text("\n".join(shares) + "\n")
    path.chmod(mode)
    return path


def test_a_worker_opened_with_the_supervisors_root_key_reads_what_it_wrote(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    for share in shares[:3]:
        barrier.submit_share(share)
    record = barrier.encrypt("rec-1", "test", b"the secret")
    worker = Barrier(store)
    assert worker.sealed
    worker.open(barrier.root_key())
    assert not worker.sealed and worker.status().term == barrier.status().term
    assert worker.decrypt(SealedRecord(record.id, record.purpose, record.term, record.ciphertext))
    assert worker.decrypt(record) == b"the secret"


def test_the_root_key_is_handed_over_only_while_unsealed(
    barrier: Barrier, shares: list[str]
) -> None:
    with pytest.raises(Sealed):
        barrier.root_key()
    for share in shares[:3]:
        barrier.submit_share(share)
    assert len(barrier.root_key()) == 32
    assert barrier.seal() is True  # it was open
    assert barrier.seal() is False  # already sealed: nothing to tell anyone
    with pytest.raises(Sealed):
        barrier.root_key()


def test_a_wrong_root_key_opens_nothing(store: Store, barrier: Barrier, shares: list[str]) -> None:
    worker = Barrier(store)
    with pytest.raises(UnsealFailed):
        worker.open(bytes(32))
    assert worker.sealed
    with pytest.raises(NotInitialized):
        Barrier(_fresh_store()).open(bytes(32))


def _fresh_store() -> Store:
    from tether.store import open_store

    return open_store("memory://")


def test_a_workers_status_shows_the_supervisors_progress(
    store: Store, barrier: Barrier, shares: list[str]
) -> None:
    worker = Barrier(store)
    worker.mirror_progress(2)
    assert worker.status().progress == 2 and worker.status().sealed
    worker.mirror_progress(0)
    assert worker.status().progress == 0


def test_a_key_file_of_enough_shares_unseals_and_one_of_too_few_changes_nothing(
    barrier: Barrier, shares: list[str], tmp_path: Path
) -> None:
    too_few = _key_file(tmp_path / "two.key", shares[:2])
    with pytest.raises(UnsealFailed, match=r"holds 2 share\(s\); unsealing takes 3"):
        barrier.unseal_from_file(too_few)
    assert barrier.sealed and barrier.status().progress == 0
    status = barrier.unseal_from_file(_key_file(tmp_path / "three.key", shares[1:4]))
    assert not status.sealed and not barrier.sealed


def test_a_key_file_is_refused_if_others_can_read_it_or_a_share_is_not_one_of_ours(
    barrier: Barrier, shares: list[str], tmp_path: Path
) -> None:
    with pytest.raises(UnsealFailed, match="chmod 600"):
        barrier.unseal_from_file(_key_file(tmp_path / "loose.key", shares[:3], 0o640))
    with pytest.raises(UnsealFailed, match="holds no unseal share"):
        barrier.unseal_from_file(_key_file(tmp_path / "empty.key", []))
    with pytest.raises(InvalidShare, match="share 2: the share is not valid base64") as caught:
        barrier.unseal_from_file(_key_file(tmp_path / "bad.key", [shares[0], "not base64!"]))
    assert shares[0] not in str(caught.value)
    assert barrier.sealed and barrier.status().progress == 0
