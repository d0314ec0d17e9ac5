"""System operations across the processes of one node: what a worker does when its
supervisor opens or seals the node, and a production node's unseal key file at start."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.audit import AuditLog
from tether.auth import Authenticator, Principal
from tether.barrier import Barrier
from tether.store import Store, open_store
from tether.system import DevFiles, SystemService


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("memory://")
    yield s
    s.close()


def _system(store: Store) -> tuple[Barrier, SystemService]:
    barrier = Barrier(store)
    audit = AuditLog(barrier.audit_key)
    return barrier, SystemService(store, barrier, audit, Authenticator(store, barrier.token_key))


def _actions(store: Store) -> list[str]:
    with store.read() as tx:
        return [e.action for e in tx.list_audit(0, 100)]


class _Supervisor:
    """The supervisor's side, in process: the channel is `tether.cli._channel`'s, tested
    with real processes in tests/cli/test_workers.py."""

    def __init__(self, supervisor: SystemService, workers: list[SystemService]) -> None:
        self.supervisor, self.workers = supervisor, workers
        self.adopted: list[bytes] = []

    def unseal(self, share: str, source: str) -> None:
        self.supervisor.unseal(share, source)

    def seal(self) -> None:
        self.supervisor.sealed_elsewhere()
        for worker in self.workers:
            worker.sealed_elsewhere()

    def adopt(self, root_key: bytes) -> None:
        self.adopted.append(root_key)


def test_a_worker_hears_of_an_open_and_a_seal_once_each(store: Store) -> None:
    barrier, supervisor = _system(store)
    shares = supervisor.initialize(1, 1, seal_after=True).shares
    supervisor.unseal(shares[0], "192.0.2.1")
    worker_barrier, worker = _system(store)
    calls: list[str] = []
    worker.on_opened.append(lambda: calls.append("opened"))
    worker.on_sealed.append(lambda: calls.append("sealed"))
    worker.opened_elsewhere(barrier.root_key())
    worker.opened_elsewhere(barrier.root_key())  # told twice: opened once
    assert not worker_barrier.sealed and calls == ["opened"]
    worker.sealed_elsewhere()
    worker.sealed_elsewhere()
    assert worker_barrier.sealed and calls == ["opened", "sealed"]
    assert _actions(store) == ["sys.init", "sys.unseal"]  # neither was the worker's to record


def test_a_workers_unseal_and_seal_go_through_its_custodian(store: Store) -> None:
    supervisor_barrier, supervisor = _system(store)
    worker_barrier, worker = _system(store)
    custodian = _Supervisor(supervisor, [worker])
    worker.attach(custodian)
    shares = worker.initialize(3, 2, seal_after=True).shares
    assert worker.unseal(shares[0], "192.0.2.1").sealed
    assert worker_barrier.status().progress == 0  # the progress is the supervisor's
    worker.unseal(shares[1], "192.0.2.1")
    assert not supervisor_barrier.sealed  # combined where the shares went
    admin = Principal(token_id="tok_x", name="ops", roles=("admin",))
    worker.opened_elsewhere(supervisor_barrier.root_key())
    assert worker.seal(admin).sealed and supervisor_barrier.sealed
    assert _actions(store) == ["sys.init", "sys.unseal", "sys.seal"]


def test_a_worker_that_keeps_the_node_open_after_init_hands_the_key_over(store: Store) -> None:
    _, supervisor = _system(store)
    worker_barrier, worker = _system(store)
    custodian = _Supervisor(supervisor, [worker])
    worker.attach(custodian)
    worker.initialize(1, 1)
    assert custodian.adopted == [worker_barrier.root_key()]


def test_a_worker_does_not_bootstrap_itself(store: Store, tmp_path: Path) -> None:
    _, worker = _system(store)
    worker.attach(_Supervisor(worker, []))
    worker.start(DevFiles(tmp_path / "dev.key", tmp_path / "token"), tmp_path / "unseal.key")
    assert not (tmp_path / "dev.key").exists() and _actions(store) == []


def test_a_node_unseals_itself_from_its_key_file_at_start(store: Store, tmp_path: Path) -> None:
    barrier, system = _system(store)
    shares = system.initialize(3, 2, seal_after=True).shares
    key_file = tmp_path / "unseal.key"
    key_file.write_text(f"{shares[2]}\n{shares[0]}\n")
    key_file.chmod(0o600)
    opened: list[str] = []
    system.on_opened.append(lambda: opened.append("opened"))
    system.start(unseal_key_file=key_file)
    assert not barrier.sealed and opened == ["opened"]
    with store.read() as tx:
        (entry,) = [e for e in tx.list_audit(0, 100) if e.action == "sys.unseal"]
    assert entry.actor == "key-file" and json.loads(entry.details)["method"] == "key file"


def test_a_key_file_before_init_leaves_the_node_sealed_for_init(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    barrier, system = _system(store)
    with caplog.at_level(logging.WARNING, logger="tether"):
        system.start(unseal_key_file=tmp_path / "not-yet.key")
    assert barrier.sealed and "not initialized" in caplog.text
