"""The private channel between the supervisor of `tether serve --workers N` and a worker.

One end of a socketpair, inherited by the worker as a file descriptor: the root key and
unseal shares cross it and nothing else does; they never touch a file, an environment
variable, an argument or a log. Messages are JSON objects, one a frame, with bytes in
base64; neither side ever logs one.
"""

from __future__ import annotations

import base64
import json
import threading
from multiprocessing.connection import Connection
from typing import Any

from tether.barrier import (
    AlreadyInitialized,
    BarrierError,
    InvalidShare,
    NotInitialized,
    RateLimited,
    Sealed,
    UnsealFailed,
)
from tether.errors import TetherError
from tether.system import CustodianRefused

Message = dict[str, Any]

#: The barrier's errors a supervisor's answer may carry, by code, raised again as such in
#: the worker so a client sees exactly what a single process would have said.
_BARRIER_ERRORS: dict[str, type[BarrierError]] = {
    cls.code: cls
    for cls in (AlreadyInitialized, InvalidShare, NotInitialized, Sealed, UnsealFailed)
}


class ChannelClosed(Exception):
    """The other end has gone (the process exited or was killed)."""


class Channel:
    """Framed JSON messages over one end of a socketpair; `send` may be called from any
    thread, `receive` from one."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._send_lock = threading.Lock()

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(Connection(fd))

    def fileno(self) -> int:
        return self._connection.fileno()

    def send(self, message: Message) -> None:
        frame = json.dumps(message, separators=(",", ":")).encode()
        try:
            with self._send_lock:
                self._connection.send_bytes(frame)
        except OSError as exc:  # a closed Connection raises OSError too
            raise ChannelClosed(str(exc)) from None

    def receive(self) -> Message:
        try:
            frame = self._connection.recv_bytes()
        except (EOFError, OSError):
            raise ChannelClosed("the other end closed the channel") from None
        message = json.loads(frame)
        if not isinstance(message, dict):
            raise ChannelClosed("the other end sent something that is not a message")
        return message

    def close(self) -> None:
        self._connection.close()


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    return base64.b64decode(text)


def error_message(exc: Exception) -> Message:
    """What a refused request tells the worker: the error's class, never a traceback."""
    if isinstance(exc, TetherError):
        error: Message = {"code": exc.code, "status": exc.status_code, "message": str(exc)}
        if isinstance(exc, RateLimited):
            error["retry_after"] = exc.retry_after
        return error
    return {
        "code": "supervisor_error",
        "status": 500,
        "message": f"the supervisor could not complete the request ({type(exc).__name__})",
    }


def raise_error(error: Message) -> None:
    """Raise in the worker the error the supervisor answered with."""
    code, message = str(error.get("code")), str(error.get("message"))
    if code == RateLimited.code:
        raise RateLimited(message, retry_after=int(error.get("retry_after", 1)))
    known = _BARRIER_ERRORS.get(code)
    if known is not None:
        raise known(message)
    raise CustodianRefused(message, int(error.get("status", 500)), code)
