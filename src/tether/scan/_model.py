"""What the scanner reads, what it looks for and what it reports. No I/O here."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

#: The largest secret, file name and author a report of found secrets carries
#: (POST /v1/exposures): no credential Tether issues or vaults is longer.
MAX_SECRET, MAX_FILE, MAX_AUTHOR = 64 * 1024, 4096, 512


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret. `regex` is RE2/PCRE-compatible (no backreferences, no
    lookaround): it is compiled into one multi-pattern database and confirmed with `re`."""

    id: str
    description: str
    regex: str
    #: The capture group that is the secret (0: the whole match).
    secret_group: int = 0
    #: Lower-case words one of which must appear in the match (gitleaks' `keywords`).
    keywords: tuple[str, ...] = ()
    #: Minimum Shannon entropy (bits per character) of the secret; None: no minimum.
    entropy: float | None = None
    #: A checksum the secret must pass, by name (see `tether.scan` validators).
    validator: str | None = None
    #: Rule-level allow-lists: regexes over the secret (or the line), path regexes,
    #: stopwords (a secret containing one is ignored).
    allow_regexes: tuple[str, ...] = ()
    allow_paths: tuple[str, ...] = ()
    stopwords: tuple[str, ...] = ()
    #: Allow-lists over the whole match and over the line it is on (gitleaks'
    #: `regexTarget = "match" | "line"`).
    allow_match_regexes: tuple[str, ...] = ()
    allow_line_regexes: tuple[str, ...] = ()
    #: The secret may span lines (a PEM block): matched in a window before where the
    #: pattern ends, not on one line.
    multiline: bool = False
    #: The provider that issues this kind of secret; an unmanaged match of a rule with a
    #: provider is a shadow NHI. None for generic rules (passwords, URLs, keys).
    provider: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes to scan and where they came from.

    `name` is the path shown to users: a file path relative to what was scanned, an
    archive member as `archive.tar.gz!member/path`, `-` for standard input. For git
    history, `data` holds only the lines a commit added to `name`, joined by newlines,
    and `lines[i]` is the line number of the i-th of them in that commit's file."""

    name: str
    data: bytes = field(repr=False)
    #: The line number of the first line of `data` (a chunk of a large file).
    first_line: int = 1
    lines: Sequence[int] | None = None
    commit: str | None = None
    author: str | None = None
    date: str | None = None


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    column: int
    commit: str | None = None
    author: str | None = None
    date: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"file": self.file, "line": self.line, "column": self.column}
        for name in ("commit", "author", "date"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class Detection:
    """A secret found at a location. `secret` never leaves the process in the clear:
    reports show `redacted(secret)` and a keyed fingerprint."""

    rule: str
    location: Location
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Allowlist:
    """What is never reported (gitleaks' `[allowlist]`, plus Tether's own): paths and
    secrets by regex, stopwords, commits."""

    paths: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    stopwords: tuple[str, ...] = ()
    commits: tuple[str, ...] = ()

    def merged(self, other: Allowlist) -> Allowlist:
        return Allowlist(
            self.paths + other.paths,
            self.regexes + other.regexes,
            self.stopwords + other.stopwords,
            self.commits + other.commits,
        )


@dataclass(frozen=True, slots=True)
class Managed:
    """The managed credential a found secret is: whose it is and whether it still works."""

    identity: str
    owner: str
    valid: bool
    lease: str | None = None
    #: A static credential as `<credential id>@v<version>`, an API or join token by id.
    credential: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"identity": self.identity, "owner": self.owner}
        if self.lease is not None:
            out["lease"] = self.lease
        if self.credential is not None:
            out["credential"] = self.credential
        out["valid"] = self.valid
        return out


@dataclass(frozen=True, slots=True)
class ScanFinding:
    """One reported secret, as `tether scan` prints it: no secret in any field."""

    rule: str
    location: Location
    fingerprint: str
    redacted: str
    managed: Managed | None = None
    #: What Tether did about it: "revoked", "rotated", or None.
    action: str | None = None

    def to_json(self) -> dict[str, object]:
        loc = self.location
        out: dict[str, object] = {
            "rule": self.rule,
            "file": loc.file,
            "line": loc.line,
            "column": loc.column,
        }
        for name in ("commit", "author", "date"):
            value = getattr(loc, name)
            if value is not None:
                out[name] = value
        out["fingerprint"] = self.fingerprint
        out["redacted"] = self.redacted
        if self.managed is not None:
            out["managed"] = self.managed.to_json()
        out["action"] = self.action
        return out


@dataclass(slots=True)
class ScanStats:
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    #: Files and archive members not read (binary, unreadable, over an archive's limits).
    skipped: int = 0

    def add(self, other: ScanStats) -> None:
        self.bytes += other.bytes
        self.files += other.files
        self.skipped += other.skipped


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s own character distribution."""
    if not value:
        return 0.0
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in Counter(value).values())


def redacted(secret: str) -> str:
    """What a report may show of a secret: a short prefix (enough to tell `ghp_` from
    `tth_`), never enough of the random part to help guess it."""
    keep = min(6, max(0, len(secret) // 4))
    return secret[:keep] + "…" if keep else "…"
