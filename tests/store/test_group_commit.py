"""Group commit: concurrent writers share one transaction, and still each get their own
outcome; the audit chain stays one unbroken chain."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from tether._internal.timeutil import utcnow
from tether.audit import AuditLog, verify_chain
from tether.model import AuditEvent, Lease, LeaseState, Task, TaskStatus
from tether.store import LeaseFilter, Store, StoreError, Tx
from tether.store._group import MAX_BATCH, GroupCommit


def _lease(n: int) -> Lease:
    now = utcnow()
    return Lease(
        id=f"lse_group{n:05d}",
        identity_id="svc",
        owner_id="team",
        provider="token",
        issued_at=now,
        expires_at=now + dt.timedelta(hours=1),
        state=LeaseState.ACTIVE,
        token_hash=os.urandom(16).hex(),
    )


class _CountingTransactions:
    """The store's transactions, counted, with a hook run inside the first one."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.count = 0
        self.inside_first: Callable[[], None] = lambda: None

    @contextmanager
    def __call__(self) -> Iterator[Tx]:
        self.count += 1
        first = self.count == 1
        with self.store.transaction() as tx:
            yield tx
            if first:
                self.inside_first()


def _run_all(
    group: GroupCommit[Any],
    works: list[Callable[[Tx], Any]],
    commit: Callable[[Callable[[Tx], Any]], Any] | None = None,
) -> list[Any]:
    """Each work on a thread of its own, through `commit` (the group's `run` unless
    given); the first starts alone and leads the group's first round."""
    submit = commit or group.run
    outcomes: list[Any] = [None] * len(works)

    def run(i: int) -> None:
        try:
            outcomes[i] = submit(works[i])
        except Exception as exc:  # the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(works))]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not group._leading and threads[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def _hold_first_round_until_queued(
    group: GroupCommit, transactions: _CountingTransactions, waiting: int
) -> None:
    """Keep the first transaction open until `waiting` more jobs are queued behind it."""

    def wait() -> None:
        deadline = time.monotonic() + 30
        while len(group._queue) < waiting and time.monotonic() < deadline:
            time.sleep(0.001)

    transactions.inside_first = wait


def test_writers_arriving_during_a_commit_share_the_next_one(store: Store) -> None:
    transactions = _CountingTransactions(store)
    group = GroupCommit(transactions)
    key = os.urandom(32)
    log = AuditLog(lambda: key)
    _hold_first_round_until_queued(group, transactions, waiting=20)

    def issue(n: int) -> Callable[[Tx], str]:
        def work(tx: Tx) -> str:
            tx.insert_leases([_lease(n)])
            log.append(tx, [AuditEvent(action="token.exchange", actor=f"w{n}")])
            return f"lse_group{n:05d}"

        return work

    outcomes = _run_all(group, [issue(n) for n in range(21)])

    assert sorted(outcomes) == [f"lse_group{n:05d}" for n in range(21)]
    assert transactions.count == 2  # the first writer's round, then everyone else's
    with store.read() as tx:
        assert len(tx.find_leases(LeaseFilter(identity_id="svc"))) == 21
        head = tx.audit_head()
    chain = verify_chain(store.iter_audit(), expected_head=head)
    assert chain.ok, chain.problem
    assert chain.entries == 21  # one entry each


def test_a_failing_writer_fails_alone(store: Store) -> None:
    transactions = _CountingTransactions(store)
    group = GroupCommit(transactions)
    _hold_first_round_until_queued(group, transactions, waiting=5)

    def good(n: int) -> Callable[[Tx], int]:
        def work(tx: Tx) -> int:
            tx.insert_leases([_lease(n)])
            return n

        return work

    def bad(tx: Tx) -> int:
        tx.insert_leases([_lease(99)])
        raise ValueError("this request is refused")

    outcomes = _run_all(group, [good(0), good(1), bad, good(2), good(3), good(4)])

    assert outcomes[:2] + outcomes[3:] == [0, 1, 2, 3, 4]
    assert isinstance(outcomes[2], ValueError)
    with store.read() as tx:
        ids = {lease.id for lease in tx.find_leases(LeaseFilter(identity_id="svc"))}
    assert ids == {f"lse_group{n:05d}" for n in range(5)}  # not the refused one's


def test_more_writers_than_one_round_takes_are_all_committed(store: Store) -> None:
    transactions = _CountingTransactions(store)
    group = GroupCommit(transactions)
    total = MAX_BATCH * 2 + 5
    _hold_first_round_until_queued(group, transactions, waiting=total - 1)

    def issue(n: int) -> Callable[[Tx], int]:
        def work(tx: Tx) -> int:
            tx.insert_leases([_lease(n)])
            return n

        return work

    outcomes = _run_all(group, [issue(n) for n in range(total)])

    assert sorted(outcomes) == list(range(total))
    with store.read() as tx:
        assert len(tx.find_leases(LeaseFilter(identity_id="svc", limit=10_000))) == total


def test_commit_together_is_a_transaction_of_the_store(store: Store) -> None:
    def work(tx: Tx) -> None:
        tx.insert_leases([_lease(7)])

    store.commit_together(work)
    with store.read() as tx:
        assert tx.get_lease("lse_group00007") is not None


def test_a_failed_commit_is_not_run_again(store: Store) -> None:
    """The commit itself failing (it may even have committed) gives every writer the
    error; running them again could write them twice."""
    runs = 0

    @contextmanager
    def failing_commit() -> Iterator[Tx]:
        nonlocal runs
        runs += 1
        with store.transaction() as tx:
            yield tx
        raise ConnectionError("the commit's answer was lost")

    group = GroupCommit(failing_commit)

    def work(tx: Tx) -> None:
        tx.insert_leases([_lease(1)])

    outcomes = _run_all(group, [work])
    assert isinstance(outcomes[0], ConnectionError)
    assert runs == 1


# -- through the store: a round's inserts are held and written one statement per table --


def _task(task_id: str, name: str) -> Task:
    now = utcnow()
    return Task(
        id=task_id,
        identity_id="svc",
        name=name,
        status=TaskStatus.ACTIVE,
        created_at=now,
        deadline=now + dt.timedelta(hours=1),
    )


def _store_round(store: Store, works: list[Callable[[Tx], Any]]) -> list[Any]:
    """Run `works` through `store.commit_together`, the first holding its round open
    until every other is queued behind it: the rest share the second round."""
    group: GroupCommit[Any] = store._group  # type: ignore[attr-defined]
    first = works[0]

    queued: list[int] = []

    def leader(tx: Tx) -> Any:
        deadline = time.monotonic() + 30
        while len(group._queue) < len(works) - 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        queued.append(len(group._queue))
        return first(tx)

    outcomes = _run_all(group, [leader, *works[1:]], store.commit_together)
    assert queued == [len(works) - 1], "the others did not share one round"
    return outcomes


def test_a_shared_round_writes_every_task_lease_and_audit_entry(store: Store) -> None:
    key = os.urandom(32)
    log = AuditLog(lambda: key)

    def issue(n: int) -> Callable[[Tx], str]:
        def work(tx: Tx) -> str:
            tx.put_task(_task(f"tsk_group{n:05d}", f"run {n}"))
            tx.insert_leases([replace(_lease(n), task_id=f"tsk_group{n:05d}")])
            log.append(tx, [AuditEvent(action="token.exchange", actor=f"w{n}")])
            return f"lse_group{n:05d}"

        return work

    outcomes = _store_round(store, [issue(n) for n in range(30)])

    assert sorted(outcomes) == [f"lse_group{n:05d}" for n in range(30)]
    with store.read() as tx:
        leases = tx.find_leases(LeaseFilter(identity_id="svc", limit=100))
        assert {lease.task_id for lease in leases} == {f"tsk_group{n:05d}" for n in range(30)}
        task = tx.get_task("tsk_group00007")
        assert task is not None and task.name == "run 7"
        head = tx.audit_head()
    chain = verify_chain(store.iter_audit(), expected_head=head)
    assert chain.ok, chain.problem
    assert chain.entries == 30


def test_in_a_shared_round_a_read_sees_what_the_round_wrote_before_it(store: Store) -> None:
    """Held inserts are written before any other statement: a later job of the round
    reads an earlier one's lease, and a job reads its own."""

    def first(tx: Tx) -> bool:
        tx.insert_leases([_lease(1)])
        return tx.get_lease("lse_group00001") is not None

    def second(tx: Tx) -> bool:
        return tx.get_lease("lse_group00001") is not None

    assert _store_round(store, [first, second]) == [True, True]


def test_a_task_put_twice_in_one_round_keeps_the_later(store: Store) -> None:
    def started(tx: Tx) -> None:
        tx.put_task(_task("tsk_twice", "started"))

    def renamed(tx: Tx) -> None:
        tx.put_task(_task("tsk_twice", "renamed"))
        tx.put_task(_task("tsk_twice", "renamed again"))

    assert _store_round(store, [started, renamed]) == [None, None]
    with store.read() as tx:
        task = tx.get_task("tsk_twice")
    assert task is not None and task.name == "renamed again"


def test_a_row_refused_when_the_round_is_written_fails_only_its_writer(store: Store) -> None:
    """A held insert that the database refuses (a token hash already taken) fails where
    the round's rows are written; its job then fails alone and the others commit."""
    taken = _lease(90)
    with store.transaction() as tx:
        tx.insert_leases([taken])

    def good(n: int) -> Callable[[Tx], int]:
        def work(tx: Tx) -> int:
            tx.insert_leases([_lease(n)])
            return n

        return work

    def clashing(tx: Tx) -> int:
        tx.insert_leases([replace(_lease(91), token_hash=taken.token_hash)])
        return 91

    outcomes = _store_round(store, [good(0), good(1), clashing, good(2)])

    assert [outcomes[i] for i in (0, 1, 3)] == [0, 1, 2]
    assert isinstance(outcomes[2], StoreError)
    with store.read() as tx:
        ids = {lease.id for lease in tx.find_leases(LeaseFilter(identity_id="svc"))}
    assert ids == {f"lse_group{n:05d}" for n in (0, 1, 2, 90)}
