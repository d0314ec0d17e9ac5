"""One worker of `tether serve --workers N`: a full node on the supervisor's socket.

The supervisor starts it as `python -m tether.cli._worker LISTEN_FD CHANNEL_FD`, both
descriptors inherited. The flags arrive as the channel's first message and the node's
state (the root key, while unsealed) as its second, both read before the worker serves
anything: a replacement worker of an unsealed node is unsealed before its first request.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import uvicorn

from tether._internal.logs import configure_logging
from tether.cli._channel import (
    Channel,
    ChannelClosed,
    Message,
    decode_key,
    encode_key,
    raise_error,
)
from tether.errors import TetherError
from tether.system import CustodianUnavailable

if TYPE_CHECKING:
    from tether.app import Tether

log = logging.getLogger(__name__)

#: How long a relayed unseal or seal may wait for the supervisor's answer (it waits for
#: every worker to confirm before answering, itself for at most `_workers._ACK_TIMEOUT`).
_ANSWER_TIMEOUT = 60.0


class _Answer:
    __slots__ = ("done", "message")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.message: Message | None = None  # None once the supervisor is gone


class SupervisorLink:
    """This worker's end of the channel: the node's `Custodian` (requests to the
    supervisor) and the reader of what it pushes (open, seal, progress), in one thread."""

    def __init__(self, channel: Channel, node: Tether) -> None:
        self._channel = channel
        self._node = node
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, _Answer] = {}
        self._lost = False
        self._on_lost: Callable[[], None] = lambda: None

    # -- the Custodian --
    def unseal(self, share: str, source: str) -> None:
        self._call({"op": "unseal", "share": share, "source": source})

    def seal(self) -> None:
        self._call({"op": "seal"})

    def adopt(self, root_key: bytes) -> None:
        self._call({"op": "adopt", "key": encode_key(root_key)})

    def _call(self, message: Message) -> None:
        with self._lock:
            if self._lost:
                raise CustodianUnavailable("this worker's supervisor is gone")
            request_id = next(self._ids)
            answer = self._waiting[request_id] = _Answer()
        try:
            self._channel.send({**message, "id": request_id})
            answered = answer.done.wait(_ANSWER_TIMEOUT)
        except ChannelClosed:
            answered = False
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        if not answered or answer.message is None:
            raise CustodianUnavailable("this worker's supervisor did not answer")
        error = answer.message.get("error")
        if error:
            raise_error(error)

    # -- what the supervisor says --
    def apply_state(self, message: Message) -> None:
        """The node's state as the worker starts: opened before the node starts, so the
        listeners hear of it from `node.start()` as in a single process."""
        if message.get("op") != "state":
            raise ChannelClosed(f"expected the node's state, not {message.get('op')!r}")
        if message.get("key"):
            self._node.barrier.open(decode_key(message["key"]))
        self._node.barrier.mirror_progress(int(message.get("progress", 0)))

    def ready(self) -> None:
        with contextlib.suppress(ChannelClosed):
            self._channel.send({"op": "ready"})

    def start(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        threading.Thread(target=self._read, name="tether-supervisor-link", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self._dispatch(self._channel.receive())
        except ChannelClosed:
            pass
        except Exception:
            log.exception("the channel to the supervisor failed")
        finally:
            self._lose()

    def _dispatch(self, message: Message) -> None:
        op = message.get("op")
        if op == "reply":
            with self._lock:
                answer = self._waiting.get(int(message.get("id", 0)))
            if answer is not None:
                answer.message = message
                answer.done.set()
            return
        try:
            if op == "open":
                self._node.system.opened_elsewhere(decode_key(message["key"]))
            elif op == "seal":
                self._node.system.sealed_elsewhere()
            elif op == "progress":
                self._node.barrier.mirror_progress(int(message["progress"]))
        except Exception:  # the barrier is open or sealed as told; a listener failed
            log.exception("applying the supervisor's change failed", extra={"op": str(op)})
        if "seq" in message:
            self._channel.send({"op": "ack", "seq": message["seq"]})

    def _lose(self) -> None:
        """The supervisor is gone: a worker without it seals itself and stops."""
        with self._lock:
            self._lost = True
            waiting, self._waiting = list(self._waiting.values()), {}
        for answer in waiting:
            answer.done.set()
        log.error("the supervisor is gone: this worker seals itself and stops")
        try:
            self._node.system.sealed_elsewhere()
        finally:
            self._on_lost()


class _WorkerServer(uvicorn.Server):
    """uvicorn, telling the supervisor once it serves, and stopped by SIGTERM only."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The supervisor stops each worker with SIGTERM. A terminal's Ctrl-C reaches the
        # whole process group, and the supervisor turns it into SIGTERM, so SIGINT is
        # ignored here; and no signal is raised again afterwards (uvicorn would): the
        # worker ends with its node stopped and status 0.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.handle_exit)
        yield

    def stop_soon(self) -> None:
        self.should_exit = True


def _run(listen_fd: int, channel: Channel) -> None:
    from tether.app import Tether
    from tether.cli._listen import prepare
    from tether.cli._server import settle_heap, uvicorn_config
    from tether.cli._workers import WorkerSpec

    spec = WorkerSpec.from_message(channel.receive())
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "INFO"))
    listener = prepare(spec.listen, spec.dev, spec.options)
    sock = socket.socket(fileno=listen_fd)
    node = Tether(listener.settings)
    try:
        link = SupervisorLink(channel, node)
        node.system.attach(link)
        link.apply_state(channel.receive())
        server = _WorkerServer(uvicorn_config(node, listener), link.ready)
        link.start(on_lost=server.stop_soon)
        node.start()
        settle_heap()
        server.run(sockets=[sock])
    finally:
        node.stop()


def _die_with_the_supervisor() -> None:
    """On Linux the kernel kills this worker the moment its supervisor dies, SIGKILL
    included: a node killed is killed whole (its socket freed for the next start), not
    left serving without its supervisor. (The supervisor starts workers from its main
    thread, whose end is the process's.) Elsewhere, the closed channel stops the worker."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _pin(cpu: int) -> None:
    """Run on `cpu` only (`tether.cli._workers.worker_cpus` says why). Before any thread
    starts: the threads this process starts inherit it."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:  # the CPU went away since the supervisor looked: float
        print(f"warning: worker {os.getpid()}: not pinned to CPU {cpu}: {exc}", file=sys.stderr)


def main(argv: list[str]) -> int:
    # Until uvicorn takes over, a Ctrl-C meant for the supervisor must not kill this one
    # with a traceback: the supervisor stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_the_supervisor()
    if len(argv) > 2:
        _pin(int(argv[2]))
    listen_fd, channel_fd = int(argv[0]), int(argv[1])
    for fd in (listen_fd, channel_fd):
        os.set_inheritable(fd, False)  # nothing this worker starts gets either
    channel = Channel.from_fd(channel_fd)
    try:
        _run(listen_fd, channel)
    except ChannelClosed:
        return 1  # the supervisor went away before this worker served
    except TetherError as exc:
        print(f"error: worker {os.getpid()}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
