"""One process of a node serves the Workload API's socket, whichever holds its lock.

A Unix socket path can be bound by one process. A node of N workers lets them race for
an advisory lock beside the socket (`<path>.lock`): the holder removes a stale socket
file, binds, and serves until it stops; if it dies the kernel releases the lock and
another worker takes over within a second. No worker ever removes a socket another
one serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from tether.spiffe._port import WorkloadBackend

if TYPE_CHECKING:
    from tether.spiffe._workload import WorkloadApiServer

log = logging.getLogger("tether.spiffe")

#: How often a process that does not hold the lock tries again.
_RETRY_SECONDS = 1.0


def unsafe_directory(directory: Path) -> str | None:
    """Why the socket may not live in `directory` (others could replace it), or None."""
    try:
        mode = directory.stat().st_mode
    except FileNotFoundError:
        return None  # made by us, 0o755 at most under the umask
    except OSError as exc:
        return f"cannot read {directory}: {exc.strerror}"
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return (
            f"{directory} may be written by other users (mode {stat.S_IMODE(mode):o}, no "
            "sticky bit), so another user could replace the socket: give it a directory "
            "only its owner writes to"
        )
    return None


class WorkloadSocket:
    def __init__(self, backend: WorkloadBackend, path: Path) -> None:
        self._backend = backend
        self._path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: WorkloadApiServer | None = None
        self._lock_fd: int | None = None
        self.serving = threading.Event()

    def start(self) -> None:
        problem = unsafe_directory(self._path.parent)
        if problem is not None:
            # Whoever can replace the socket can serve workloads a bundle of their own.
            log.error("not serving the SPIFFE Workload API: %s", problem)
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="workload-api", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._take_lock():
                try:
                    # The server itself replaces a stale socket, and refuses a live one or
                    # a file that is not a socket: nothing else at the path is removed.
                    from tether.spiffe._workload import WorkloadApiServer  # h2, protobuf

                    self._server = WorkloadApiServer(self._backend, str(self._path))
                    self._server.start()
                except OSError:
                    log.exception("the Workload API socket could not be opened")
                    self._release_lock()
                else:
                    log.info("serving the SPIFFE Workload API", extra={"socket": str(self._path)})
                    self.serving.set()
                    return
            self._stop.wait(_RETRY_SECONDS)

    def _take_lock(self) -> bool:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self._path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.stop()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        self._release_lock()
        self.serving.clear()
