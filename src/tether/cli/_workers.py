"""The supervisor of `tether serve --workers N`: N worker processes on one socket.

The supervisor binds the socket (before anything starts, as a single process does), opens
and migrates the store, keeps a barrier of its own, and serves no request. Each worker is
a full node (`_worker`) on an inherited copy of the socket, with a private channel
(`_channel`) to the supervisor:

- a share given to any worker is relayed here, where one unseal guard limits and audits
  the attempts of the whole node, and the root key, once combined, goes to every worker;
- a seal on any worker seals this barrier and every worker;
- either is answered only once every live worker has confirmed it, so what a client was
  told holds on whichever worker it reaches next;
- a worker that dies is replaced at once, and a replacement gets the key before it serves;
- SIGTERM or SIGINT stops the workers (each drains what it is serving) and exits 0.

Background work runs in whichever worker holds the cluster's leadership lease
(`tether.cluster`): every worker starts its node as a single process would, and the
supervisor runs none.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from tether.cli._channel import (
    Channel,
    ChannelClosed,
    Message,
    decode_key,
    encode_key,
    error_message,
)
from tether.cli._listen import Listener, ServeOptions
from tether.errors import TetherError

if TYPE_CHECKING:
    from tether.barrier import Barrier
    from tether.config import Settings
    from tether.store import Store
    from tether.system import SystemService

log = logging.getLogger(__name__)

#: How long a worker has to confirm an open, a seal or a progress change. One that does
#: not confirm a seal in time is killed: it must not go on serving with the keys.
_ACK_TIMEOUT = 15.0
#: How long stopping workers may drain their requests before they are killed.
_DRAIN_TIMEOUT = 30.0
#: A worker that exits sooner than this after it started died young: a second young death
#: in a row waits before the replacement (1 s, doubling up to `_MAX_BACKOFF`).
_YOUNG = 10.0
_MAX_BACKOFF = 30.0
#: The longest the supervisor's loop waits before it looks at its clocks again.
_TICK = 0.25
_REQUESTS = frozenset({"unseal", "seal", "adopt"})


class WorkersFailed(TetherError):
    """The node's workers could not start: the first one exited before it served."""

    code = "workers_failed"


def _path(value: object) -> Path | None:
    return None if value is None else Path(str(value))


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What each worker is started with: the command line, sent as its first message
    (the environment it inherits is the supervisor's)."""

    listen: str | None
    dev: bool
    options: ServeOptions

    def message(self) -> Message:
        o = self.options
        return {
            "op": "spec",
            "listen": self.listen,
            "dev": self.dev,
            "tls_cert": None if o.tls_cert is None else str(o.tls_cert),
            "tls_key": None if o.tls_key is None else str(o.tls_key),
            "tls_client_ca": None if o.tls_client_ca is None else str(o.tls_client_ca),
            "tls_client_auth": o.tls_client_auth,
            "trusted_proxies": list(o.trusted_proxies),
            "allow_plain_http": o.allow_plain_http,
            "allow_existing_schema": o.allow_existing_schema,
        }

    @classmethod
    def from_message(cls, message: Message) -> WorkerSpec:
        if message.get("op") != "spec":
            raise ChannelClosed(f"expected the worker's flags, not {message.get('op')!r}")
        options = ServeOptions(
            tls_cert=_path(message["tls_cert"]),
            tls_key=_path(message["tls_key"]),
            tls_client_ca=_path(message["tls_client_ca"]),
            tls_client_auth=message["tls_client_auth"],
            trusted_proxies=tuple(message["trusted_proxies"]),
            allow_plain_http=bool(message["allow_plain_http"]),
            allow_existing_schema=bool(message["allow_existing_schema"]),
        )
        return cls(message["listen"], bool(message["dev"]), options)


#: A worker process just started, and the supervisor's end of its channel.
Launched = tuple[subprocess.Popen[bytes], socket.socket]


def worker_cpus(count: int, pin: bool) -> list[int | None]:
    """The CPU each worker slot is pinned to: the CPUs this process may run on (a
    container's cpuset, a `taskset`), in turn; None for each when not pinning, or when
    there is one CPU (nothing to choose).

    A worker's threads share one GIL, so it runs Python on one core at a time anyway;
    left to float, every hand-off of the GIL between its threads could cross cores, and
    on a virtual machine each such wake-up is an inter-processor interrupt. Pinned, the
    same 2-core machine exchanged about 2,100 tokens/s instead of 1,500."""
    allowed = usable_cpus() if hasattr(os, "sched_setaffinity") else []
    if not pin or len(allowed) < 2:
        return [None] * count
    return [allowed[slot % len(allowed)] for slot in range(count)]


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container's cpuset, a `taskset`), not every
    CPU of the machine; where the platform cannot say, every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def launch(sock: socket.socket, cpu: int | None = None) -> Launched:
    """Start a worker process on the listening socket (pinned to `cpu`, if given). It
    imports what it serves with, then waits for its spec on the channel: nothing of the
    node is built before then."""
    ours, theirs = socket.socketpair()
    fds = (sock.fileno(), theirs.fileno())
    pinned = () if cpu is None else (str(cpu),)
    try:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, this package
            [sys.executable, "-m", "tether.cli._worker", *map(str, fds), *pinned], pass_fds=fds
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours


class _Worker:
    """One worker process as the supervisor sees it."""

    __slots__ = ("acked", "channel", "gone", "process", "ready", "slot", "started")

    def __init__(self, slot: int, process: subprocess.Popen[bytes], channel: Channel) -> None:
        self.slot = slot
        self.process = process
        self.channel = channel
        self.started = time.monotonic()
        self.ready = False  # uvicorn serves in it
        self.gone = False  # its channel closed: it exited (or is about to be killed)
        self.acked = 0  # the last broadcast it confirmed


class Supervisor:
    """Starts, replaces and stops the workers, and keeps the node's root key for them.

    Three kinds of thread: the main one (signals, deaths, replacements), one reader per
    worker channel (confirmations, requests), and the keeper, which handles requests one
    at a time, so an unseal and a seal never interleave.
    """

    def __init__(
        self,
        sock: socket.socket,
        spec: WorkerSpec,
        count: int,
        barrier: Barrier,
        system: SystemService,
        early: dict[int, Launched] | None = None,
        cpus: list[int | None] | None = None,
    ) -> None:
        self._sock, self._spec, self._count = sock, spec, count
        #: The CPU of each slot (`worker_cpus`): a replacement runs where its slot ran.
        self._cpus = cpus if cpus is not None else [None] * count
        #: Worker processes started before the store was opened (`supervise`), by slot;
        #: each leaves it when adopted.
        self._early = early if early is not None else {}
        self._barrier, self._system = barrier, system
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._requests: queue.SimpleQueue[tuple[_Worker, Message] | None] = queue.SimpleQueue()
        # Held while the node's state changes and is told, and while a new worker is
        # given that state and joins: no worker misses a change or sees it twice.
        self._state = threading.RLock()
        self._acks = threading.Condition()
        self._workers: dict[int, _Worker] = {}  # slot -> its current worker
        self._seq = itertools.count(1)
        self._progress = 0
        self._any_ready = False
        self._stopping = False
        self._kill_at: float | None = None
        self._failed: str | None = None
        self._young_deaths: dict[int, int] = {}
        self._due: dict[int, float] = {}  # slot -> when its replacement starts

    # -- running --
    def run(self) -> None:
        self._system.on_opened.append(self._opened)
        self._system.on_sealed.append(self._sealed)
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        keeper = threading.Thread(target=self._keep, name="tether-keeper", daemon=True)
        keeper.start()
        try:
            for slot in range(self._count):
                self._spawn(slot)
            log.info("supervising workers", extra={"workers": self._count})
            self._loop()
        finally:
            self._requests.put(None)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if self._failed:
            raise WorkersFailed(self._failed)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._events.put(("signal", signum))  # SimpleQueue.put is safe in a handler

    def _loop(self) -> None:
        while not (self._stopping and not self._workers):
            try:
                kind, value = self._events.get(timeout=self._wait())
            except queue.Empty:
                kind, value = "tick", None
            if kind == "signal":
                self._stop(force=self._stopping)  # a second signal kills at once
            elif kind == "gone":
                self._reap(value)
            now = time.monotonic()
            if self._kill_at is not None and now >= self._kill_at:
                log.warning("workers did not drain in time: killing them")
                self._kill_at = None
                self._stop(force=True)
            for slot, due in list(self._due.items()):
                if due <= now:
                    del self._due[slot]
                    self._spawn(slot)

    def _wait(self) -> float:
        now = time.monotonic()
        soonest = min([*self._due.values(), now + _TICK])
        return max(0.0, min(soonest - now, _TICK))

    def _stop(self, force: bool) -> None:
        if not self._stopping:
            self._stopping = True
            self._kill_at = time.monotonic() + _DRAIN_TIMEOUT
            self._due.clear()
            log.info("stopping: every worker drains its requests")
        with self._state:
            workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGKILL if force else signal.SIGTERM)

    # -- workers --
    def _spawn(self, slot: int) -> None:
        if slot in self._early:
            process, ours = self._early.pop(slot)
        else:
            process, ours = launch(self._sock, self._cpus[slot])
        worker = _Worker(slot, process, Channel(Connection(ours.detach())))
        with contextlib.suppress(ChannelClosed):  # if it died already, its reader says so
            worker.channel.send(self._spec.message())
            with self._state:
                worker.channel.send(self._state_message())
                self._workers[slot] = worker
        threading.Thread(
            target=self._read, args=(worker,), name=f"tether-worker-{slot}", daemon=True
        ).start()
        log.info("worker started", extra={"worker": slot, "pid": process.pid})

    def _state_message(self) -> Message:
        key = None if self._barrier.sealed else encode_key(self._barrier.root_key())
        return {"op": "state", "key": key, "progress": self._progress}

    def _read(self, worker: _Worker) -> None:
        pid = worker.process.pid
        try:
            while True:
                message = worker.channel.receive()
                op = message.get("op")
                if op == "ack":
                    with self._acks:
                        worker.acked = max(worker.acked, int(message["seq"]))
                        self._acks.notify_all()
                elif op == "ready":
                    worker.ready = self._any_ready = True
                    log.info("worker serving", extra={"worker": worker.slot, "pid": pid})
                elif op in _REQUESTS:
                    self._requests.put((worker, message))
        except ChannelClosed:
            pass
        except Exception:
            log.exception("a worker's channel failed", extra={"worker": worker.slot})
        finally:
            with self._acks:
                worker.gone = True
                self._acks.notify_all()
            self._events.put(("gone", worker))

    def _reap(self, worker: _Worker) -> None:
        with self._state:
            if self._workers.get(worker.slot) is worker:
                del self._workers[worker.slot]
        try:
            status = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its channel broke but it lives on: end it
            worker.process.kill()
            status = worker.process.wait()
        worker.channel.close()
        if self._stopping:
            return
        log.warning(
            "worker exited: replacing it",
            extra={"worker": worker.slot, "pid": worker.process.pid, "status": status},
        )
        if not worker.ready and not self._any_ready:
            self._failed = (
                f"worker {worker.slot} exited with status {status} before it served "
                "(its error is above); nothing is served"
            )
            self._stop(force=False)
            return
        young = time.monotonic() - worker.started < _YOUNG
        deaths = self._young_deaths[worker.slot] = (
            self._young_deaths.get(worker.slot, 0) + 1 if young else 0
        )
        delay = 0.0 if deaths <= 1 else min(_MAX_BACKOFF, 2.0 ** (deaths - 2))
        self._due[worker.slot] = time.monotonic() + delay

    # -- the node's key --
    def _keep(self) -> None:
        while (item := self._requests.get()) is not None:
            worker, message = item
            answer: Message = {"op": "reply", "id": message.get("id")}
            with self._state:
                try:
                    self._handle(message)
                except Exception as exc:
                    if not isinstance(exc, TetherError):
                        log.exception("a worker's request failed", extra={"worker": worker.slot})
                    answer["error"] = error_message(exc)
                self._tell_progress()
            with contextlib.suppress(ChannelClosed):
                worker.channel.send(answer)

    def _handle(self, message: Message) -> None:
        op = message["op"]
        if op == "unseal":
            self._system.unseal(str(message["share"]), str(message["source"]))
        elif op == "seal":
            self._system.sealed_elsewhere()  # the worker has recorded `sys.seal`
        elif op == "adopt":
            self._system.opened_elsewhere(decode_key(str(message["key"])))

    def _opened(self) -> None:
        self._broadcast({"op": "open", "key": encode_key(self._barrier.root_key())})

    def _sealed(self) -> None:
        for worker in self._broadcast({"op": "seal"}):
            log.error("a worker did not confirm sealing: killing it", extra={"worker": worker.slot})
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()

    def _tell_progress(self) -> None:
        progress = self._barrier.progress  # no store read: this must not fail
        if progress != self._progress:
            self._progress = progress
            self._broadcast({"op": "progress", "progress": progress})

    def _broadcast(self, message: Message) -> list[_Worker]:
        """Send `message` to every live worker and wait until each has confirmed it;
        returns those that did not in time."""
        seq = next(self._seq)
        with self._state:
            live = [w for w in self._workers.values() if not w.gone]
            for worker in live:
                with contextlib.suppress(ChannelClosed):
                    worker.channel.send({**message, "seq": seq})
        deadline = time.monotonic() + _ACK_TIMEOUT
        with self._acks:
            for worker in live:
                while not (worker.gone or worker.acked >= seq):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._acks.wait(left)
            return [w for w in live if not (w.gone or w.acked >= seq)]


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def supervise(
    listener: Listener, sock: socket.socket, spec: WorkerSpec, count: int, pin: bool = True
) -> None:
    """Run `count` workers on `sock` until SIGTERM or SIGINT, each pinned to a CPU of
    its own (in turn) unless `pin` is False."""
    from tether.system import DevFiles

    settings = listener.settings
    cpus = worker_cpus(count, pin)
    # The workers start first: their imports (seconds, on a small machine) overlap the
    # supervisor's opening and migrating of the store, and they build their nodes only
    # once the supervisor sends them their spec, after the store is migrated.
    early: dict[int, Launched] = {}
    try:
        for slot in range(count):
            early[slot] = launch(sock, cpus[slot])
        store, barrier, system = _keeper(settings)
    except BaseException:
        _abandon(early.values())
        raise
    try:
        # Dev mode's bootstrap and the unseal key file are the supervisor's: it is the
        # one process that initializes or unseals, and its workers get the key from it.
        dev = DevFiles(settings.dev_key_file, settings.dev_token_file) if settings.dev else None
        system.start(dev, settings.unseal_key_file)
        Supervisor(sock, spec, count, barrier, system, early, cpus).run()
    except BaseException:
        _abandon(early.values())  # those the supervisor did not adopt
        raise
    finally:
        system.stop()
        store.close()


def _abandon(launched: Iterable[Launched]) -> None:
    """Stop worker processes that were started but never given their spec: a closed
    channel ends each before it builds anything."""
    for process, ours in launched:
        ours.close()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def _keeper(settings: Settings) -> tuple[Store, Barrier, SystemService]:
    """What the supervisor holds: the store (migrated before any worker builds its
    node), a barrier, and the system operations that unseal, seal and bootstrap it,
    without the services that serve requests (its workers are full nodes, tether.app).
    Importing only these keeps the supervisor's start short."""
    from tether.audit import AuditLog
    from tether.auth import Authenticator
    from tether.barrier import Barrier
    from tether.store import open_store
    from tether.system import SystemService

    store = open_store(settings.database_url, allow_existing_schema=settings.allow_existing_schema)
    store.migrate()
    barrier = Barrier(store)
    audit = AuditLog(barrier.audit_key)
    auth = Authenticator(store, barrier.token_key)
    return store, barrier, SystemService(store, barrier, audit, auth)
