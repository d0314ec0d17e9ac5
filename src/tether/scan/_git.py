"""Git history and the index as Blobs: the lines each commit added, where they landed.

One `git log -p -U0` over every ref is streamed through a pipe and parsed as bytes, a
line at a time, so memory follows the largest single file change, not the history, and
file contents need not be UTF-8. Each (commit, file) with added lines becomes one Blob
whose `lines` are the new file's line numbers, read from the hunk headers.

Choices:
- Author date (`%aI`, strict ISO 8601): when the line was written, which survives a
  rebase or cherry-pick; the committer date says when it was last rewritten.
- Merges are diffed dense-combined (`--cc`), and only the lines that are new against
  every parent are kept: the lines a merge brings in were already reported at the commit
  that added them, and what a conflict resolution wrote ("evil merge") is still found.
  gitleaks shows merges no diff at all and misses the latter.
- Renames are followed (`-M`): a moved file reports only the lines that changed.
- Binary files (git's own test, or a `-diff`/`binary` attribute) and submodule pointer
  changes have no lines; deletions (`+++ /dev/null`) have none added.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator

from tether.scan._model import Blob
from tether.scan.errors import ScanSourceError

# `-c` settings that would change the shape of the output if a user's config had them.
_CONFIG = (
    "-c",
    "core.quotePath=false",
    "-c",
    "diff.suppressBlankEmpty=false",
    "-c",
    "diff.relative=false",
    "-c",
    "log.showSignature=false",
    "-c",
    "color.ui=false",
)
_DIFF = (
    "-U0",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--ignore-submodules",
    "-M",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
# A NUL starts each commit's header: no diff line can start with one (every content
# line has a +/-/space prefix), so it cannot be forged by what a commit adds.
_LOG = ("log", "-p", "--cc", "--root", "--format=%x00%H%x00%aI%x00%an <%ae>", *_DIFF)

_BODY = frozenset(b"+- ")
_ESCAPE = re.compile(rb'\\([0-7]{3}|[abtnvfr"\\])')
_ESCAPED = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13, b'"': 34, b"\\": 92}


def iter_git_blobs(repo: str, *, since: str | None = None) -> Iterator[Blob]:
    """The added lines of every commit reachable from any ref (`--all`: branches, tags,
    remotes, stash, notes), newest first. With `since`, only commits not reachable from
    `since` (`--all --not REV`): what was added after REV, on any ref. A ref that never
    shared REV's history is scanned whole, however old its commits are.

    The repository and `since` are checked here, before the first Blob: a bad path or
    revision raises `ScanSourceError` at once with git's message."""
    _check_repo(repo)
    args = [*_LOG, "--all"]
    if since is not None:
        args += ["--not", _resolve(repo, since)]
    return _parse(_lines(repo, args))


def iter_staged_blobs(repo: str) -> Iterator[Blob]:
    """The lines the index adds over HEAD (over nothing before the first commit): what
    `git commit` is about to record. `commit` is None. Honours `GIT_INDEX_FILE`, which
    git sets for hooks during `git commit -a` and partial commits."""
    _check_repo(repo)
    return _parse(_lines(repo, ["diff", "--cached", *_DIFF]))


def _check_repo(repo: str) -> None:
    _run(repo, ["rev-parse", "--git-dir"])


def _resolve(repo: str, rev: str) -> str:
    if not rev or rev.startswith("-"):
        # Never hand git something it would read as an option (`--output=...`).
        raise ScanSourceError(f"{rev!r} is not a revision")
    try:
        return _run(repo, ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"]).strip()
    except ScanSourceError as e:
        raise ScanSourceError(f"unknown revision {rev!r} in {repo}") from e


def _command(repo: str, args: list[str]) -> list[str]:
    # git from PATH, the one the user's own `git` commands run.
    return ["git", "-C", repo, *_CONFIG, *args]


def _run(repo: str, args: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - an argument list, no shell
            _command(repo, args),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise ScanSourceError("git is not installed: it is needed to scan history") from None
    if done.returncode != 0:
        raise ScanSourceError(_message(repo, args, done.stderr))
    return done.stdout.decode("utf-8", "replace")


def _message(repo: str, args: list[str], stderr: bytes) -> str:
    said = stderr.decode("utf-8", "replace").strip() or "no message"
    return f"git {args[0]} failed in {repo}: {said}"


def _lines(repo: str, args: list[str]) -> Iterator[bytes]:
    """git's standard output, a line at a time, while git runs. Standard error goes to
    a file: a pipe left unread could fill and stall git."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(  # noqa: S603 - an argument list, no shell
                _command(repo, args),
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                bufsize=1 << 20,
            )
        except FileNotFoundError:
            raise ScanSourceError("git is not installed: it is needed to scan history") from None
        assert proc.stdout is not None
        finished = False
        try:
            yield from proc.stdout
            finished = True
        finally:
            proc.stdout.close()
            if not finished:
                # The consumer stopped early (or failed): git need not walk the rest.
                proc.kill()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise ScanSourceError(_message(repo, args, err.read()))


def _parse(output: Iterable[bytes]) -> Iterator[Blob]:
    """Blobs from `git log -p` / `git diff` output (`-U0`, plain or combined)."""
    commit: str | None = None
    author: str | None = None
    date: str | None = None
    path: str | None = None
    added: list[bytes] = []
    numbers: list[int] = []
    in_hunk = False
    parents = 1
    all_plus = b"+"
    number = 0

    def flush() -> Iterator[Blob]:
        if path is not None and added:
            yield Blob(
                name=path,
                data=b"\n".join(added),
                lines=tuple(numbers),
                commit=commit,
                author=author,
                date=date,
            )
        added.clear()
        numbers.clear()

    for raw in output:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if in_hunk:
            if line and line[0] in _BODY:
                marks = line[:parents]
                # A line is in the new file unless some parent's column removes it; it
                # is new unless some parent already had it.
                if b"-" not in marks:
                    if marks == all_plus:
                        added.append(line[parents:])
                        numbers.append(number)
                    number += 1
                continue
            if line.startswith(b"\\"):  # "\ No newline at end of file"
                continue
            in_hunk = False
        if line.startswith(b"@@"):
            hunk = _hunk(line)
            if hunk is not None:
                parents, number = hunk
                all_plus = b"+" * parents
                in_hunk = True
        elif line.startswith(b"\x00"):
            yield from flush()
            path = None
            commit, date, author = (
                part.decode("utf-8", "replace") for part in line[1:].split(b"\x00", 2)
            )
        elif line.startswith(b"diff "):
            yield from flush()
            path = None
        elif line.startswith(b"+++ "):
            path = _new_path(line[4:])
    yield from flush()


def _hunk(line: bytes) -> tuple[int, int] | None:
    """(parents, first new line) of `@@ -a,b +c,d @@` or `@@@ -a,b -c,d +e,f @@@`."""
    fields = line.split(b" ")
    parents = len(fields[0]) - 1
    if parents < 1 or len(fields) < parents + 2:
        return None
    new = fields[parents + 1]
    if not new.startswith(b"+"):
        return None
    try:
        return parents, int(new[1:].split(b",", 1)[0])
    except ValueError:
        return None


def _new_path(name: bytes) -> str | None:
    # git ends the name with a tab when it holds a space (as GNU diff does); a name that
    # really ends in a tab is quoted, so the tab outside the quotes is only a marker.
    if name.endswith(b"\t"):
        name = name[:-1]
    if name == b"/dev/null":
        return None
    if name.startswith(b'"') and name.endswith(b'"') and len(name) >= 2:
        name = _unquote(name[1:-1])
    if name.startswith(b"b/"):
        name = name[2:]
    return name.decode("utf-8", "backslashreplace")


def _unquote(body: bytes) -> bytes:
    """Undo git's C-style quoting (`core.quotePath=false` still quotes `"`, `\\` and
    control characters)."""

    def one(m: re.Match[bytes]) -> bytes:
        code = m.group(1)
        return bytes([int(code, 8) if len(code) == 3 else _ESCAPED[code]])

    return _ESCAPE.sub(one, body)
