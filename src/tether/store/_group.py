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
    __slots__ = ("done", "error", "value", "work")

    def __init__(self, work: Callable[[Tx], T]) -> None:
        self.work = work
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

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
        self._changed = threading.Condition(threading.Lock())
        self._queue: list[_Job[Any]] = []
        self._leading = False

    def run(self, work: Callable[[Tx], T]) -> T:
        job: _Job[T] = _Job(work)
        with self._changed:
            self._queue.append(job)
        while True:
            with self._changed:
                while self._leading and not job.done:
                    self._changed.wait()
                if job.done:
                    return job.result()
                # Lead the next round; a job queued beyond MAX_BATCH leads again after it.
                self._leading = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                self._commit(batch)
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()

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
