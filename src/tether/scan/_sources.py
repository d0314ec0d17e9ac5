"""Where scanned bytes come from: files, directory trees, archives and standard input.

A file becomes one Blob, or several at newline boundaries when it is larger than a chunk,
so memory stays bounded whatever the file. Archives (zip, tar, tar.gz/bz2/xz, a single
gzip/bzip2/xz file) are recognized by their magic bytes, not their names, and read in
memory member by member: nothing is extracted to disk, and a per-archive budget of
decompressed bytes and members stops a bomb before it is expanded. What is not scanned
(binary, unreadable, over budget, corrupt) is recorded in the caller's `skipped` list,
never raised: one bad file does not end a scan of a tree.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from tether.scan._model import Blob
from tether.scan.errors import ScanSourceError

CHUNK_BYTES = 16 * 1024 * 1024
MAX_ARCHIVE_BYTES = 1 << 30
MAX_ARCHIVE_MEMBERS = 100_000

#: How much of a file decides whether it is binary (git's heuristic looks as far).
_HEAD = 8192
#: Names that say "tar inside" when the decompressed head does not (pre-POSIX tars).
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    OSError,
    lzma.LZMAError,
    zlib.error,
    struct.error,
    NotImplementedError,
    ValueError,
)

# Reasons in `Skipped.reason`.
UNREADABLE = "unreadable"
BINARY = "binary"
SYMLINK_OUTSIDE = "symlink-outside"
BAD_ARCHIVE = "bad-archive"
ENCRYPTED = "encrypted"
NESTED_ARCHIVE = "nested-archive"
ARCHIVE_LIMIT = "archive-limit"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file, directory or archive member that was not scanned, by display name. For
    `archive-limit` the name is the top-level archive: members before the cap were
    scanned, the rest were not."""

    name: str
    reason: str


def iter_files(
    paths: Sequence[str], *, skipped: list[Skipped] | None = None
) -> Iterator[tuple[str, str]]:
    """(filesystem path, display name) of every regular file under `paths`.

    Every path is checked before anything is listed, so a typo fails the scan at once.
    Directories are walked in name order, a directory's files before its
    subdirectories; `.git` directories are not entered. Inside a walk, symbolic links
    are not followed: a link to a directory would loop or leave the tree, and a link to
    a file in the tree would report its secrets twice. Links that point outside the
    tree are recorded as skipped, those inside are not (their target is scanned under
    its own name). A path given directly is taken as given, link or not.
    """
    for path in paths:
        if not os.path.exists(path):
            raise ScanSourceError(f"{path}: no such file or directory")
    return _iter_files(list(paths), skipped)


def _iter_files(paths: list[str], skipped: list[Skipped] | None) -> Iterator[tuple[str, str]]:
    for path in paths:
        display = os.path.normpath(path)
        if os.path.isdir(path):
            yield from _walk(path, display, os.path.realpath(path), skipped)
        else:
            yield path, display


def _walk(
    top: str, top_display: str, root: str, skipped: list[Skipped] | None
) -> Iterator[tuple[str, str]]:
    # An explicit stack: a deep tree must not meet the recursion limit.
    stack = [(top, top_display)]
    while stack:
        directory, shown = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            _skip(skipped, shown, UNREADABLE)
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            name = entry.name if shown == "." else os.path.join(shown, entry.name)
            try:
                if entry.is_symlink():
                    if not _inside(entry.path, root):
                        _skip(skipped, name, SYMLINK_OUTSIDE)
                elif entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        subdirs.append((entry.path, name))
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, name
                # FIFOs, sockets and devices are not files: reading one could block.
            except OSError:
                _skip(skipped, name, UNREADABLE)
        stack.extend(reversed(subdirs))


def _inside(path: str, root: str) -> bool:
    target = os.path.realpath(path)
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def read_blobs(
    path: str,
    display: str,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    max_archive_bytes: int = MAX_ARCHIVE_BYTES,
    max_members: int = MAX_ARCHIVE_MEMBERS,
    skipped: list[Skipped] | None = None,
) -> Iterator[Blob]:
    """The Blobs of one file: itself (in chunks past `chunk_bytes`), or an archive's
    members as `display!member` (an archive inside an archive is opened, one level
    deeper is not). Binary files and members (a NUL byte in the first 8 KiB) are
    skipped. `max_archive_bytes` caps the decompressed bytes of one archive, nested
    ones included, and `max_members` its members."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    return _Reader(chunk_bytes, max_archive_bytes, max_members, skipped).file(path, display)


def stdin_blob(stream: BinaryIO) -> Blob:
    return Blob(name="-", data=stream.read())


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _LimitReached(Exception):
    """The archive's budget is spent: stop reading it, wherever we are inside it."""


class _Budget:
    __slots__ = ("bytes_left", "members_left")

    def __init__(self, max_bytes: int, max_members: int) -> None:
        self.bytes_left = max_bytes
        self.members_left = max_members

    def spend(self, n: int) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise _LimitReached

    def member(self) -> None:
        self.members_left -= 1
        if self.members_left < 0:
            raise _LimitReached


class _Capped:
    """A reader that charges what it returns to the archive's budget, and never asks its
    source for more than the budget has left: a bomb is stopped one byte past the cap,
    not after it has been inflated into memory. It has the read-only shape tarfile's
    stream mode wants."""

    __slots__ = ("_budget", "_inner", "_pos")

    def __init__(self, inner: _Readable, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            parts = []
            while piece := self.read(1 << 20):
                parts.append(piece)
            return b"".join(parts)
        data = self._inner.read(min(size, max(self._budget.bytes_left, 0) + 1))
        self._pos += len(data)
        self._budget.spend(len(data))
        return data

    def write(self, b: bytes, /) -> object:
        raise io.UnsupportedOperation("read-only")

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> object:
        raise io.UnsupportedOperation("not seekable")

    def close(self) -> object:
        return None


class _Reader:
    __slots__ = ("chunk_bytes", "max_archive_bytes", "max_members", "skipped")

    def __init__(
        self,
        chunk_bytes: int,
        max_archive_bytes: int,
        max_members: int,
        skipped: list[Skipped] | None,
    ) -> None:
        self.chunk_bytes = chunk_bytes
        self.max_archive_bytes = max_archive_bytes
        self.max_members = max_members
        self.skipped = skipped

    def file(self, path: str, display: str) -> Iterator[Blob]:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below; a generator holds it open
        except OSError:
            _skip(self.skipped, display, UNREADABLE)
            return
        with f:
            try:
                st = os.fstat(f.fileno())
                regular = stat.S_ISREG(st.st_mode)
                if regular and st.st_size <= self.chunk_bytes:
                    # The common case: one read, one Blob, no copy.
                    data = f.read()
                    kind = _archive_kind(data)
                    if kind is None:
                        if data.find(b"\x00", 0, _HEAD) != -1:
                            _skip(self.skipped, display, BINARY)
                        else:
                            yield Blob(name=display, data=data)
                        return
                    source: BinaryIO = io.BytesIO(data)
                else:
                    first = f.read(self.chunk_bytes)
                    kind = _archive_kind(first)
                    if kind is None:
                        if first.find(b"\x00", 0, _HEAD) != -1:
                            _skip(self.skipped, display, BINARY)
                        else:
                            yield from self._chunks(f, display, first)
                        return
                    if regular:
                        f.seek(0)
                        source = f
                    else:
                        # A pipe cannot seek, and zip needs to: hold it, within budget.
                        rest = f.read(max(self.max_archive_bytes - len(first), 0) + 1)
                        source = io.BytesIO(first + rest)
            except OSError:
                _skip(self.skipped, display, UNREADABLE)
                return
            budget = _Budget(self.max_archive_bytes, self.max_members)
            yield from self._archive(source, display, kind, 0, budget)

    def _archive(
        self, source: BinaryIO, name: str, kind: str, level: int, budget: _Budget
    ) -> Iterator[Blob]:
        try:
            if kind == "zip":
                yield from self._zip(source, name, level, budget)
            elif kind == "tar":
                yield from self._tar(_Capped(source, budget), name, level, budget)
            else:
                start = source.tell()
                stream = _Capped(_decompressed(kind, source), budget)
                head = _read_upto(stream, _HEAD)
                if _is_tar(head) or name.lower().endswith(_TAR_SUFFIXES):
                    # tarfile wants the stream from its first byte: start it again.
                    source.seek(start)
                    yield from self._tar(
                        _Capped(_decompressed(kind, source), budget), name, level, budget
                    )
                else:
                    yield from self._content(head, stream, f"{name}!{_stem(name)}", level, budget)
        except _LimitReached:
            if level:
                raise
            _skip(self.skipped, name, ARCHIVE_LIMIT)
        except _ARCHIVE_ERRORS:
            _skip(self.skipped, name, BAD_ARCHIVE)

    def _zip(self, source: BinaryIO, name: str, level: int, budget: _Budget) -> Iterator[Blob]:
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                budget.member()
                if info.is_dir():
                    continue
                member = f"{name}!{_member_name(info.filename)}"
                if info.flag_bits & 0x1:
                    _skip(self.skipped, member, ENCRYPTED)
                    continue
                try:
                    with archive.open(info) as raw:
                        stream = _Capped(raw, budget)
                        head = _read_upto(stream, _HEAD)
                        yield from self._content(head, stream, member, level, budget)
                except _ARCHIVE_ERRORS:
                    # One bad member (a CRC error, a method zipfile lacks) spares the rest.
                    _skip(self.skipped, member, BAD_ARCHIVE)

    def _tar(self, stream: _Capped, name: str, level: int, budget: _Budget) -> Iterator[Blob]:
        # Stream mode ("r|"): members are read in order and never seeked back to, so a
        # compressed tar is decompressed once, through the budget.
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for info in archive:
                budget.member()
                if not info.isfile():
                    continue
                fp = archive.extractfile(info)
                if fp is None:
                    continue
                member = f"{name}!{_member_name(info.name)}"
                head = _read_upto(fp, _HEAD)
                yield from self._content(head, fp, member, level, budget)

    def _content(
        self, head: bytes, stream: _Readable, name: str, level: int, budget: _Budget
    ) -> Iterator[Blob]:
        """An archive member, its first bytes read: a nested archive, binary, or text."""
        kind = _archive_kind(head)
        if kind is not None:
            if level >= 1:
                _skip(self.skipped, name, NESTED_ARCHIVE)
                return
            # Random access (zip) needs the whole member; it is charged to the budget.
            data = head + stream.read()
            yield from self._archive(io.BytesIO(data), name, kind, level + 1, budget)
        elif head.find(b"\x00") != -1:
            _skip(self.skipped, name, BINARY)
        else:
            yield from self._chunks(stream, name, head)

    def _chunks(self, stream: _Readable, name: str, buf: bytes) -> Iterator[Blob]:
        """Blobs of at most `chunk_bytes`, cut after the last newline of each, with the
        line number each starts at. A line longer than a chunk is cut where the chunk
        ends; the next Blob starts on that same line."""
        size = self.chunk_bytes
        line = 1
        emitted = False
        eof = False
        while True:
            while not eof and len(buf) < size:
                more = stream.read(size - len(buf))
                if more:
                    buf += more
                else:
                    eof = True
            if eof:
                if buf or not emitted:
                    yield Blob(name=name, data=buf, first_line=line)
                return
            cut = buf.rfind(b"\n") + 1 or len(buf)
            piece, buf = buf[:cut], buf[cut:]
            yield Blob(name=name, data=piece, first_line=line)
            emitted = True
            line += piece.count(b"\n")


def _archive_kind(head: bytes) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if _is_tar(head):
        return "tar"
    return None


def _is_tar(head: bytes) -> bool:
    # POSIX ustar and GNU tar magic; both carry a NUL, so no text file has them.
    return head[257:265] in (b"ustar\x0000", b"ustar  \x00")


def _decompressed(kind: str, source: BinaryIO) -> _Readable:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(source)
    return lzma.LZMAFile(source)


def _read_upto(stream: _Readable, n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            break
        data += more
    return data


def _stem(name: str) -> str:
    """The member name of a single compressed file: `logs/app.log.gz` holds `app.log`."""
    base = os.path.basename(name.rsplit("!", 1)[-1])
    for suffix in _COMPRESSED_SUFFIXES:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _skip(skipped: list[Skipped] | None, name: str, reason: str) -> None:
    if skipped is not None:
        skipped.append(Skipped(name, reason))
