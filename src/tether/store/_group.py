"""Group commit: the writes of requests that arrive while a commit is in flight share the
next transaction, so N concurrent issuances cost one commit (one fsync), not N.

Each caller still gets its own result or its own exception. The first caller to find no
commit in flight becomes the leader: it takes every queued job, runs them one after the
other in one transaction and commits. Meanwhile new jobs queue for the next round, and
when the leader is done one of them leads it. If the shared transaction fails, every job
of that round is run again alone, so one bad request never fails the others: jobs must
therefore only write to the transaction they are given (no effects outside it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from tether.store._port import Tx

T = TypeVar("T")
TxT = TypeVar("TxT", bound=Tx)

#: More than this many jobs wait for the next round rather than growing one transaction
#: (a long transaction holds the writer lock, and every waiter's latency, longer).
MAX_BATCH = 64


class _Job(Generic[T]):
    __slots__ = ("done", "error", "value", "wake", "work")

    def __init__(self, work: Callable[[Tx], T]) -> None:
        self.work = work
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None
        #: Held until the job is done or its thread is to lead the next round: each
        #: waiter is woken once, for itself (a condition's notify_all woke every waiter
        #: of every round, most only to wait again).
        self.wake = threading.Lock()
        self.wake.acquire()

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class GroupCommit(Generic[TxT]):
    """Runs jobs in shared transactions opened by `transaction`. `finish(tx)` runs after
    the round's jobs, before the commit, as part of them: a backend that held their
    writes back to batch them writes them there, so that a bad row fails the jobs (each
    is then run alone) rather than the commit."""

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[TxT]],
        finish: Callable[[TxT], None] | None = None,
    ) -> None:
        self._transaction = transaction
        self._finish = finish
        self._mutex = threading.Lock()
        self._queue: list[_Job[Any]] = []
        self._leading = False

    def run(self, work: Callable[[Tx], T]) -> T:
        job: _Job[T] = _Job(work)
        with self._mutex:
            self._queue.append(job)
            lead, self._leading = not self._leading, True
        if not lead:
            job.wake.acquire()  # done, or handed the next round
            if job.done:
                return job.result()
        self._lead()
        return job.result()

    def _lead(self) -> None:
        """Run one round: the leader's own job heads the queue (it led a round nobody
        was leading, or was handed the next). Then the next queued job leads the next."""
        with self._mutex:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            self._commit(batch)
        finally:
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for other in batch[1:]:
                other.wake.release()
            if successor is not None:
                successor.wake.release()

    def _commit(self, batch: list[_Job[Any]]) -> None:
        values: list[Any] = []
        finished = False
        try:
            with self._transaction() as tx:
                values = [job.work(tx) for job in batch]
                if self._finish is not None:
                    self._finish(tx)
                finished = True
        except Exception as exc:
            if len(batch) == 1 or finished:
                # One job, or the commit itself failed (it may even have committed):
                # running the jobs again could write them twice. Each gets the error.
                for job in batch:
                    job.error = exc
            else:
                for job in batch:
                    self._alone(job)
        except BaseException as exc:  # an interrupt: every waiter hears of it, then it goes on
            for job in batch:
                job.error = exc
                job.done = True
            raise
        else:
            for job, value in zip(batch, values, strict=True):
                job.value = value
        for job in batch:
            job.done = True

    def _alone(self, job: _Job[Any]) -> None:
        try:
            with self._transaction() as tx:
                job.value = job.work(tx)
                if self._finish is not None:
                    self._finish(tx)
        except Exception as exc:
            job.error = exc
