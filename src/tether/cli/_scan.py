"""`tether scan`: find secrets in files, archives, git history or stdin; tie them to
Tether's inventory and end the ones that still work.

Exit status: 1 when something new is found, 0 when not, 2 on error. With a server
configured (TETHER_ADDR or TETHER_TOKEN), found secrets are sent to it (POST
/v1/exposures) to be matched against every credential it manages; a managed one that
still works is revoked or rotated at once (`--dry-run`: matched, not ended). Without
one (or `--offline`), nothing leaves this machine and fingerprints are keyed by a local
key, so a baseline is tied to the key it was made with.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape

from tether import __version__
from tether.cli._api import client
from tether.cli._output import Column, emit_json, err, show_listing
from tether.client import ClientError
from tether.errors import TetherError
from tether.scan import (
    Allowlist,
    Detection,
    Managed,
    Rule,
    ScanFinding,
    Scanner,
    ScanStats,
    default_rules,
    default_workers,
    fingerprint,
    redacted,
    scan_blobs,
    scan_paths,
)
from tether.scan._baseline import Baseline
from tether.scan._git import iter_git_blobs, iter_staged_blobs
from tether.scan._gitleaks import bundled_rules_path, load_gitleaks_config, load_gitleaks_rules
from tether.scan._model import MAX_AUTHOR, MAX_FILE, MAX_SECRET
from tether.scan._sarif import to_sarif
from tether.scan._sources import stdin_blob

#: Secrets sent to the server per request: well under its body limit.
_BATCH_BYTES = 128 * 1024
_EXIT_FOUND, _EXIT_ERROR = 1, 2

_COLUMNS = (
    Column("rule", "rule", identifier=True),
    Column("location", lambda f: _where(dict(f))),
    Column("secret", "redacted"),
    Column("fingerprint", lambda f: f["fingerprint"][:16], identifier=True),
    Column("managed", lambda f: _managed(f.get("managed"))),
    Column("action", "action"),
)


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--git", "git_history", is_flag=True, help="Scan git history at PATH (default .).")
@click.option("--since", metavar="REV", help="With --git: only commits not reachable from REV.")
@click.option("--staged", is_flag=True, help="Scan the lines staged in the index (pre-commit).")
@click.option("--stdin", "from_stdin", is_flag=True, help="Scan standard input.")
@click.option(
    "--rules",
    "rules_file",
    metavar="FILE",
    help="A gitleaks-format TOML rules file instead of the built-in rules ('gitleaks':"
    " gitleaks' default rules, bundled).",
)
@click.option(
    "--allow",
    "allow_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A gitleaks-format [allowlist] file (paths, regexes, stopwords, commits) applied"
    " on top of the rules.",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report only what is not in this earlier JSON or SARIF report.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "sarif"]),
    default="table",
    show_default=True,
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write here."
)
@click.option("--workers", type=click.IntRange(min=1), help="Processes (default: every core).")
@click.option("--offline", is_flag=True, help="Do not send anything to a Tether server.")
@click.option("--dry-run", is_flag=True, help="Match with the server, but end nothing.")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TETHER_SCAN_KEY_FILE",
    help="Offline: the key fingerprints are made with (hex), so that a baseline made on"
    " one machine holds on another. Default: a key of this user's, made on first use.",
)
def scan(paths: tuple[str, ...], **flags: Any) -> None:
    """Find secrets in PATHs (files, directories, archives), git history or stdin."""
    try:
        options = _Options(**flags)
        status = _scan(paths, options)
    except click.ClickException:
        raise  # usage errors: click prints them and exits 2
    except ClientError as exc:
        _error(exc.args[0] if exc.args else "the server refused the report")
    except (TetherError, OSError) as exc:
        _error(str(exc))
    except (KeyboardInterrupt, click.exceptions.Abort):
        _error("interrupted")
    except Exception as exc:  # exit 1 means "found": anything unexpected is an error
        _error(f"{type(exc).__name__}: {exc}")
    sys.exit(status)


@dataclass(frozen=True, slots=True)
class _Options:
    git_history: bool
    since: str | None
    staged: bool
    from_stdin: bool
    rules_file: str | None
    allow_file: Path | None
    baseline: Path | None
    fmt: str
    report_path: Path | None
    workers: int | None
    offline: bool
    dry_run: bool
    key_file: Path | None

    @property
    def online(self) -> bool:
        return not self.offline and _server_configured()


def _error(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    sys.exit(_EXIT_ERROR)


def _scan(paths: Sequence[str], options: _Options) -> int:
    if options.since is not None and not options.git_history:
        raise click.UsageError("--since needs --git")
    if sum((options.git_history, options.staged, options.from_stdin)) > 1:
        raise click.UsageError("choose one of --git, --staged and --stdin")
    rules, allow = _rules(options.rules_file)
    if options.allow_file is not None:
        allow = allow.merged(_allow(options.allow_file))
    detections, stats = _detect(paths, rules, allow, options)
    known = Baseline.load(str(options.baseline)) if options.baseline is not None else None
    online = options.online
    with client() if online else _NoServer() as api:
        if online:
            key = bytes.fromhex(api.get("/v1/exposures/key")["key"])
        else:
            key = _local_key(options.key_file)
        new = [
            (ScanFinding(d.rule, d.location, fingerprint(key, d.secret), redacted(d.secret)), d)
            for d in detections
        ]
        if known is not None:
            new = [(f, d) for f, d in new if not known.contains(f)]
        if online and new:
            reported = _matched(api, new, respond=not options.dry_run)
        else:
            reported = [f for f, _ in new]
    _emit(reported, rules, stats, options.fmt, options.report_path)
    return _EXIT_FOUND if reported else 0


def _rules(rules_file: str | None) -> tuple[tuple[Rule, ...], Allowlist]:
    """The built-in rules, or a rules file's; Tether's own formats are always looked for
    (a file that defines the same ids keeps its own)."""
    if rules_file is None:
        return default_rules(), Allowlist()
    path = bundled_rules_path() if rules_file == "gitleaks" else rules_file
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter("is not a UTF-8 TOML file", param_hint="--rules") from None
    rules, allow = load_gitleaks_rules(text, source=str(path))
    ids = {rule.id for rule in rules}
    own = tuple(r for r in default_rules() if "tether" in r.tags and r.id not in ids)
    return own + rules, allow


def _allow(path: Path) -> Allowlist:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter("is not a UTF-8 TOML file", param_hint="--allow") from None
    config = load_gitleaks_config(text, source=str(path))
    if config.rules:
        raise click.BadParameter("holds rules: give those with --rules", param_hint="--allow")
    return config.allowlist


def _detect(
    paths: Sequence[str], rules: tuple[Rule, ...], allow: Allowlist, options: _Options
) -> tuple[list[Detection], ScanStats]:
    if not (options.git_history or options.staged or options.from_stdin):
        workers = options.workers or default_workers()
        return scan_paths(list(paths) or ["."], rules=rules, allow=allow, workers=workers)
    scanner = Scanner(rules, allow)
    started = time.perf_counter()
    if options.from_stdin:
        found, stats = scan_blobs(scanner, [stdin_blob(sys.stdin.buffer)])
    elif options.staged:
        found, stats = scan_blobs(scanner, iter_staged_blobs(paths[0] if paths else "."))
    else:
        found, stats = [], ScanStats()
        for repo in paths or (".",):
            detections, part = scan_blobs(scanner, iter_git_blobs(repo, since=options.since))
            found += detections
            stats.add(part)
    stats.seconds = time.perf_counter() - started
    return found, stats


def _matched(
    api: Any, new: list[tuple[ScanFinding, Detection]], *, respond: bool
) -> list[ScanFinding]:
    """The server's answer for each new finding: managed or not, and what it did."""
    answered: list[ScanFinding] = []
    batch: list[dict[str, Any]] = []
    size = 0
    pending: list[ScanFinding] = []

    def send() -> None:
        result = api.post("/v1/exposures", {"source": "scan", "respond": respond, "secrets": batch})
        for sent, back in zip(pending, result["findings"], strict=True):
            answered.append(_answer(sent, back))
        batch.clear()
        pending.clear()

    kept: list[ScanFinding] = []
    for finding, detection in new:
        if len(detection.secret) > MAX_SECRET:
            kept.append(finding)  # larger than any credential Tether issues or vaults
            continue
        location = finding.location.to_json()
        location["file"] = str(location["file"])[-MAX_FILE:]
        if location.get("author"):
            location["author"] = str(location["author"])[:MAX_AUTHOR]
        entry = {"rule": finding.rule, "secret": detection.secret, "location": location}
        if batch and size + len(detection.secret) > _BATCH_BYTES:
            send()
            size = 0
        batch.append(entry)
        pending.append(finding)
        size += len(detection.secret) + 200
    if batch:
        send()
    return answered + kept


def _answer(sent: ScanFinding, back: dict[str, Any]) -> ScanFinding:
    managed = back.get("managed")
    return ScanFinding(
        sent.rule,
        sent.location,
        sent.fingerprint,
        sent.redacted,
        None
        if managed is None
        else Managed(
            identity=managed["identity"],
            owner=managed["owner"],
            valid=managed["valid"],
            lease=managed.get("lease"),
            credential=managed.get("credential"),
        ),
        back.get("action"),
    )


def _emit(
    findings: list[ScanFinding],
    rules: Sequence[Rule],
    stats: ScanStats,
    fmt: str,
    report_path: Path | None,
) -> None:
    if fmt == "table" and report_path is None:
        items = [f.to_json() for f in findings]
        if items:
            show_listing("secrets found", _COLUMNS, items, "table")
        mb = stats.bytes / 1e6
        skipped = f" ({stats.skipped} skipped: binary or unreadable)" if stats.skipped else ""
        err.print(
            f"{len(findings)} found in {stats.files} files{skipped}, {mb:.1f} MB,"
            f" {stats.seconds:.2f} s",
            markup=False,
            highlight=False,
        )
        return
    if fmt == "sarif":
        document: Any = to_sarif(findings, rules, version=__version__)
    else:
        document = {
            "findings": [f.to_json() for f in findings],
            "stats": {
                "bytes": stats.bytes,
                "files": stats.files,
                "skipped": stats.skipped,
                "seconds": round(stats.seconds, 3),
            },
        }
    if report_path is None:
        emit_json(document)
        return
    report_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _where(item: dict[str, Any]) -> str:
    at = f"{item['file']}:{item['line']}:{item['column']}"
    return f"{at} @{item['commit'][:12]}" if item.get("commit") else at


def _managed(managed: dict[str, Any] | None) -> str:
    if not managed:
        return ""
    held = managed.get("lease") or managed.get("credential") or ""
    state = "valid" if managed["valid"] else "ended"
    return f"{managed['identity']} ({managed['owner']}) {held} {state}".strip()


def _server_configured() -> bool:
    return bool(os.environ.get("TETHER_ADDR") or os.environ.get("TETHER_TOKEN"))


def _local_key(given: Path | None) -> bytes:
    """The key of offline fingerprints: the one given, or one per user made on first use."""
    if given is not None:
        try:
            key = bytes.fromhex(given.read_text().strip())
        except ValueError:
            raise click.BadParameter("must hold a key in hex", param_hint="--key-file") from None
        if len(key) < 16:
            raise click.BadParameter("needs at least 16 bytes of key", param_hint="--key-file")
        return key
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "tether"
    path = base / "scan-fingerprint.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    base.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another scan made it meanwhile
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


class _NoServer:
    """Where no server is configured: nothing is sent anywhere."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


COMMANDS = (scan,)
