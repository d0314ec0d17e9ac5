"""The detection engine: one multi-pattern pass over the bytes, then confirmation.

Every rule's pattern is compiled into one Hyperscan database, which reads the input once
at hundreds of MB/s whatever the number of rules. Hyperscan reports where a pattern may
end; only those lines (or, for a multi-line rule, the window before them) are read
again with Python's `re`, which extracts the secret's group and is the authority on what
matched. Then the rule's own checks run: keywords, entropy, checksum, allow-lists.
A pattern Hyperscan cannot compile is compiled in its prefilter mode (a superset the
confirmation narrows); failing that, it runs with `re` alone over the whole input.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import hyperscan

from tether.scan._model import Allowlist, Blob, Detection, Location, Rule, ScanStats
from tether.scan._model import shannon_entropy as entropy_of
from tether.scan._rules import VALIDATORS, default_rules
from tether.scan._sources import Skipped, iter_files, read_blobs
from tether.scan.errors import ScanError

#: How far before a match's end a multi-line rule's secret may start.
_MULTILINE_WINDOW = 64 * 1024
#: Markers that allow a line: Tether's, and gitleaks' so that existing repositories keep
#: their annotations.
_INLINE_ALLOW = (b"tether:allow", b"gitleaks:allow")


class InvalidRule(ScanError):
    status_code = 422
    code = "invalid_rule"


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    pattern: re.Pattern[bytes]
    multiline: bool
    generic: bool
    validator: Callable[[str], bool] | None
    allow: tuple[re.Pattern[str], ...]
    allow_match: tuple[re.Pattern[str], ...]
    allow_line: tuple[re.Pattern[str], ...]
    allow_paths: tuple[re.Pattern[str], ...]
    keywords: tuple[bytes, ...]


def _compile_rule(rule: Rule) -> _Compiled:
    try:
        pattern = re.compile(rule.regex.encode())
        allow = tuple(re.compile(r) for r in rule.allow_regexes)
        allow_match = tuple(re.compile(r) for r in rule.allow_match_regexes)
        allow_line = tuple(re.compile(r) for r in rule.allow_line_regexes)
        allow_paths = tuple(re.compile(p) for p in rule.allow_paths)
    except re.error as exc:
        raise InvalidRule(f"rule {rule.id}: regex does not compile: {exc}") from None
    if rule.secret_group > pattern.groups:
        raise InvalidRule(f"rule {rule.id}: secret_group {rule.secret_group} is not a group")
    validator = None
    if rule.validator is not None:
        validator = VALIDATORS.get(rule.validator)
        if validator is None:
            raise InvalidRule(f"rule {rule.id}: validator {rule.validator!r} is not known")
    return _Compiled(
        rule=rule,
        pattern=pattern,
        multiline=rule.multiline or "[\\s\\S" in rule.regex or "(?s" in rule.regex,
        generic="generic" in rule.tags,
        validator=validator,
        allow=allow,
        allow_match=allow_match,
        allow_line=allow_line,
        allow_paths=allow_paths,
        keywords=tuple(k.lower().encode() for k in rule.keywords),
    )


def _hyperscan_flags(regex: str) -> int | None:
    """The flags with which Hyperscan takes `regex`, or None if it cannot."""
    for flags in (0, hyperscan.HS_FLAG_PREFILTER):
        try:
            hyperscan.Database().compile(
                expressions=[regex.encode()], ids=[0], elements=1, flags=[flags]
            )
        except hyperscan.error:
            continue
        return flags
    return None


def _database_of(
    rules: Sequence[Rule], indexes: Sequence[int], flags: Sequence[int]
) -> hyperscan.Database:
    database = hyperscan.Database()
    database.compile(
        expressions=[rules[i].regex.encode() for i in indexes],
        ids=list(indexes),
        elements=len(indexes),
        flags=list(flags),
    )
    return database


def _compiled_database(
    rules: Sequence[Rule], unaccelerated: list[int]
) -> hyperscan.Database | None:
    """One database of every rule Hyperscan takes; the others are listed in
    `unaccelerated`. Rules are probed one by one only when the whole set is refused."""
    everything = list(range(len(rules)))
    try:
        return _database_of(rules, everything, [0] * len(rules))
    except hyperscan.error:
        pass
    indexes, flags = [], []
    for index, rule in enumerate(rules):
        taken = _hyperscan_flags(rule.regex)
        if taken is None:
            unaccelerated.append(index)
        else:
            indexes.append(index)
            flags.append(taken)
    return _database_of(rules, indexes, flags) if indexes else None


class Scanner:
    """Finds secrets in blobs. Build one per process: it holds a compiled database and
    its scratch space, which are not shared between threads."""

    def __init__(self, rules: Sequence[Rule] | None = None, allow: Allowlist | None = None):
        rules = tuple(default_rules() if rules is None else rules)
        if not rules:
            raise InvalidRule("no rules to scan with")
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise InvalidRule(f"rule {rule.id}: defined twice")
            seen.add(rule.id)
        self.rules = rules
        self._compiled = tuple(_compile_rule(r) for r in rules)
        self._allow = allow or Allowlist()
        try:
            self._allow_regexes = tuple(re.compile(r) for r in self._allow.regexes)
            self._allow_paths = tuple(re.compile(p) for p in self._allow.paths)
        except re.error as exc:
            raise InvalidRule(f"allowlist: regex does not compile: {exc}") from None
        self._stopwords = tuple(s.lower() for s in self._allow.stopwords)
        self._allow_commits = frozenset(self._allow.commits)
        self._unaccelerated: list[int] = []
        self._database = _compiled_database(rules, self._unaccelerated)

    @property
    def unaccelerated(self) -> tuple[str, ...]:
        """Rules that run with `re` alone (slow): Hyperscan could not take them."""
        return tuple(self.rules[i].id for i in self._unaccelerated)

    def scan_blob(self, blob: Blob) -> list[Detection]:
        if blob.commit is not None and blob.commit in self._allow_commits:
            return []
        if any(p.search(blob.name) for p in self._allow_paths):
            return []
        data = blob.data
        windows = self._candidate_windows(data)
        found: dict[tuple[int, int], tuple[int, int, _Compiled]] = {}
        #: Spans a specific rule's pattern matched, confirmed or not: a look-alike with a
        #: bad checksum is no more a generic secret than a real token is.
        claimed: list[tuple[int, int]] = []
        for index, start, end in windows:
            compiled = self._compiled[index]
            if compiled.allow_paths and any(p.search(blob.name) for p in compiled.allow_paths):
                continue
            group = compiled.rule.secret_group
            for match in compiled.pattern.finditer(data, start, end):
                s, e = match.span(group)
                if s < 0 or (index, s) in found:
                    continue
                if self._confirmed(compiled, match, data, s, e):
                    found[(index, s)] = (s, e, compiled)
                elif not compiled.generic:
                    claimed.append((s, e))
        spans = _without_overlaps(list(found.values()), claimed)
        return self._detections(blob, spans)

    def _candidate_windows(self, data: bytes) -> list[tuple[int, int, int]]:
        """(rule index, start, end) of every region a rule may match in."""
        windows: list[tuple[int, int, int]] = []
        size = len(data)
        if self._database is not None:
            covered = [-1] * len(self._compiled)
            compiled = self._compiled

            def on_match(index: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
                if to <= covered[index]:
                    return  # this line (or window) is already to be confirmed
                line_end = data.find(b"\n", to)
                if line_end < 0:
                    line_end = size
                if compiled[index].multiline:
                    start = data.rfind(b"\n", 0, max(0, to - _MULTILINE_WINDOW)) + 1
                else:
                    # This line and the one before: a rule's `\s` may span a line break
                    # (`api_key =` then the value on the next line).
                    here = data.rfind(b"\n", 0, to - 1)
                    start = data.rfind(b"\n", 0, here) + 1 if here > 0 else 0
                covered[index] = line_end
                windows.append((index, start, line_end))

            self._database.scan(data, match_event_handler=on_match)
        windows.extend((index, 0, size) for index in self._unaccelerated)
        return windows

    def _confirmed(
        self, compiled: _Compiled, match: re.Match[bytes], data: bytes, start: int, end: int
    ) -> bool:
        rule = compiled.rule
        secret = data[start:end].decode("utf-8", "replace")
        if compiled.keywords:
            text = match.group(0).lower()
            if not any(k in text for k in compiled.keywords):
                return False
        if rule.entropy is not None and entropy_of(secret) < rule.entropy:
            return False
        if compiled.validator is not None and not compiled.validator(secret):
            return False
        lowered = secret.lower()
        if any(w in lowered for w in rule.stopwords) or any(w in lowered for w in self._stopwords):
            return False
        if any(p.search(secret) for p in compiled.allow) or any(
            p.search(secret) for p in self._allow_regexes
        ):
            return False
        if compiled.allow_match:
            whole = match.group(0).decode("utf-8", "replace")
            if any(p.search(whole) for p in compiled.allow_match):
                return False
        if compiled.allow_line:
            line_start = data.rfind(b"\n", 0, start) + 1
            line_end = data.find(b"\n", start)
            line = data[line_start : line_end if line_end >= 0 else len(data)]
            if any(p.search(line.decode("utf-8", "replace")) for p in compiled.allow_line):
                return False
        return True

    def _detections(self, blob: Blob, spans: list[tuple[int, int, _Compiled]]) -> list[Detection]:
        """Detections in input order, with their line and column. Each line is measured
        once, and columns are counted from the previous detection on the same line, so
        a long line with many secrets (a SQL dump, a minified bundle) stays linear."""
        data = blob.data
        out: list[Detection] = []
        line_index, counted_to = 0, 0
        line_start = line_end = -1
        allowed = False
        column_at, column = 0, 1
        for start, end, compiled in sorted(spans, key=lambda item: item[0]):
            line_index += data.count(b"\n", counted_to, start)
            counted_to = start
            if start >= line_end:
                line_start = data.rfind(b"\n", 0, start) + 1
                line_end = data.find(b"\n", start)
                if line_end < 0:
                    line_end = len(data)
                allowed = any(m in data[line_start:line_end] for m in _INLINE_ALLOW)
                column_at, column = line_start, 1
            if allowed:
                continue
            column += len(data[column_at:start].decode("utf-8", "replace"))
            column_at = start
            if blob.lines is not None:
                number = blob.lines[line_index] if line_index < len(blob.lines) else 0
            else:
                number = blob.first_line + line_index
            out.append(
                Detection(
                    rule=compiled.rule.id,
                    location=Location(
                        file=blob.name,
                        line=number,
                        column=column,
                        commit=blob.commit,
                        author=blob.author,
                        date=blob.date,
                    ),
                    secret=data[start:end].decode("utf-8", "replace"),
                )
            )
        return out


def _without_overlaps(
    spans: list[tuple[int, int, _Compiled]], claimed: list[tuple[int, int]]
) -> list[tuple[int, int, _Compiled]]:
    """One detection per secret: a specific rule wins over a generic one covering any of
    the same bytes (and so does a specific rule's refused match: `claimed`), and of two
    specific rules on the same bytes the first in order wins."""
    specific: dict[tuple[int, int], tuple[int, int, _Compiled]] = {}
    for span in sorted((s for s in spans if not s[2].generic), key=lambda s: s[0]):
        specific.setdefault((span[0], span[1]), span)
    kept = sorted(specific.values(), key=lambda s: s[0])
    covering = sorted([(s[0], s[1]) for s in kept] + claimed)
    starts = [s[0] for s in covering]
    reach: list[int] = []  # reach[i]: the furthest end of covering[0..i]
    for s in covering:
        reach.append(max(s[1], reach[-1]) if reach else s[1])
    out = list(kept)
    for span in spans:
        if not span[2].generic:
            continue
        before = bisect.bisect_left(starts, span[1])
        if before and reach[before - 1] > span[0]:
            continue
        out.append(span)
    return out


# -- many files, every core --

_worker: Scanner | None = None


def _init_worker(rules: Sequence[Rule], allow: Allowlist | None) -> None:
    global _worker  # noqa: PLW0603 - one scanner per worker process, built once
    _worker = Scanner(rules, allow)


def _scan_file(item: tuple[str, str]) -> tuple[list[Detection], ScanStats]:
    assert _worker is not None
    return scan_file(_worker, *item)


def scan_file(scanner: Scanner, path: str, display: str) -> tuple[list[Detection], ScanStats]:
    stats = ScanStats(files=1)
    found: list[Detection] = []
    skipped: list[Skipped] = []
    for blob in read_blobs(path, display, skipped=skipped):
        stats.bytes += len(blob.data)
        found.extend(scanner.scan_blob(blob))
    stats.skipped = len(skipped)
    return found, stats


def scan_blobs(scanner: Scanner, blobs: Iterable[Blob]) -> tuple[list[Detection], ScanStats]:
    stats = ScanStats()
    found: list[Detection] = []
    names: set[str] = set()
    for blob in blobs:
        stats.bytes += len(blob.data)
        names.add(blob.name)
        found.extend(scanner.scan_blob(blob))
    stats.files = len(names)
    return found, stats


def scan_paths(
    paths: Sequence[str],
    *,
    rules: Sequence[Rule] | None = None,
    allow: Allowlist | None = None,
    workers: int = 1,
) -> tuple[list[Detection], ScanStats]:
    """Every file under `paths` (archives included), on `workers` processes."""
    started = time.perf_counter()
    rules = tuple(default_rules() if rules is None else rules)
    skipped: list[Skipped] = []
    files = list(iter_files(paths, skipped=skipped))
    stats = ScanStats(skipped=len(skipped))
    found: list[Detection] = []
    for detections, part in _map_files(files, rules, allow, workers):
        found.extend(detections)
        stats.add(part)
    found.sort(key=lambda d: (d.location.file, d.location.line, d.location.column, d.rule))
    stats.seconds = time.perf_counter() - started
    return found, stats


def _map_files(
    files: list[tuple[str, str]],
    rules: tuple[Rule, ...],
    allow: Allowlist | None,
    workers: int,
) -> Iterator[tuple[list[Detection], ScanStats]]:
    global _worker  # noqa: PLW0603 - handed to forked workers, which inherit it
    workers = max(1, min(workers, len(files)))
    scanner = Scanner(rules, allow)
    if workers == 1:
        for item in files:
            yield scan_file(scanner, *item)
        return
    # Fork where the platform has it: workers start at once with the compiled database
    # (each its own copy of the scratch space); elsewhere each worker compiles its own.
    forking = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if forking else "spawn")
    if forking:
        _worker = scanner
    initializer = None if forking else _init_worker
    initargs: tuple[object, ...] = () if forking else (rules, allow)
    # Large files first, so that the last worker is not left alone with the biggest.
    files.sort(key=lambda item: -_size(item[0]))
    try:
        with context.Pool(workers, initializer=initializer, initargs=initargs) as pool:
            yield from pool.imap_unordered(_scan_file, files, chunksize=4)
    finally:
        _worker = None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
