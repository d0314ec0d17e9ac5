"""Who is on the other end of a Unix socket, as the kernel says: no token, no claim.

SO_PEERCRED gives the pid, uid and gid the peer had when it called connect(); the binary
is read through /proc/<pid>/exe. A pid outlives nothing: if the process that connected
exits, the number can be handed to another process, and /proc/<pid> then describes that
one. So the binary is read only while the connecting process is known to be alive: the
kernel's pidfd for the peer (SO_PEERPIDFD, Linux 6.5+) names that exact process, and after
reading /proc we check it has not exited. Without SO_PEERPIDFD the pidfd is opened by
number right after accept, which leaves the short window between connect() and accept().

Reading another user's /proc/<pid>/exe needs the right to ptrace it (root, or the same
uid): a server without it still learns the uid and gid, and reports no binary.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

#: Python 3.11 does not name it; the value is fixed by the Linux ABI.
_SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
_UCRED = struct.Struct("3i")
#: Binaries whose digest is remembered (a node sees few distinct binaries).
_CACHE_CAPACITY = 1024

_FileKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Peer:
    """A local caller as the kernel identifies it."""

    pid: int
    uid: int
    gid: int
    #: What /proc/<pid>/exe points to; None when it cannot be read (the process exited,
    #: another user's process without the right to inspect it, another pid namespace).
    #: A binary deleted or replaced since it started reads "<path> (deleted)".
    path: str | None
    #: sha256 (hex) of the binary the process runs: read through /proc/<pid>/exe, so a
    #: file replaced on disk since is not what is hashed.
    sha256: str | None


class _DigestCache:
    """sha256 of binaries, by what identifies a file's content without reading it.

    The key adds st_ctime_ns to (device, inode, size, mtime): mtime can be set back by
    the file's owner (utime), ctime cannot, so a rewrite that keeps size and mtime is
    still noticed.
    """

    def __init__(self, capacity: int = _CACHE_CAPACITY) -> None:
        self._capacity = capacity
        self._digests: OrderedDict[_FileKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _FileKey) -> str | None:
        with self._lock:
            digest = self._digests.get(key)
            if digest is not None:
                self._digests.move_to_end(key)
            return digest

    def put(self, key: _FileKey, digest: str) -> None:
        with self._lock:
            self._digests[key] = digest
            self._digests.move_to_end(key)
            while len(self._digests) > self._capacity:
                self._digests.popitem(last=False)


_digests = _DigestCache()


def peer_of(sock: socket.socket) -> Peer:
    """The credentials of the process connected to `sock` (a connected AF_UNIX socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    path: str | None = None
    digest: str | None = None
    if pid > 0:  # 0: the peer is in a pid namespace this process cannot see
        pidfd = _pidfd_of(sock, pid)
        try:
            path, digest = _binary_of(pid)
            if pidfd is None or _exited(pidfd):
                # What /proc showed may be another process that took over the pid.
                path, digest = None, None
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return Peer(pid=pid, uid=uid, gid=gid, path=path, sha256=digest)


def _pidfd_of(sock: socket.socket, pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    # An older kernel: a pidfd by number is right unless the peer already exited.
    with contextlib.suppress(OSError):
        return os.pidfd_open(pid)
    return None


def _exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


def _binary_of(pid: int) -> tuple[str | None, str | None]:
    exe = f"/proc/{pid}/exe"
    try:
        before = os.stat(exe)
        path = os.readlink(exe)
        with open(exe, "rb") as binary:
            opened = os.fstat(binary.fileno())
            if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
                return None, None  # it exec'd another binary while we looked
            key = (
                opened.st_dev,
                opened.st_ino,
                opened.st_size,
                opened.st_mtime_ns,
                opened.st_ctime_ns,
            )
            digest = _digests.get(key)
            if digest is None:
                digest = hashlib.file_digest(binary, "sha256").hexdigest()
                _digests.put(key, digest)
    except OSError:
        return None, None
    return path, digest
