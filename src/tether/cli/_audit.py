"""`tether audit` and `tether alerts`: the hash-chained log and the alerts raised in it."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from tether.audit import read_jsonl, verify_chain
from tether.cli._api import all_pages, by_seq, client, get
from tether.cli._output import (
    Column,
    emit_json,
    err,
    fail,
    json_option,
    out,
    output_option,
    show_listing,
)

#: Entries per request when reading alerts (the API's default page).
_ALERT_PAGE = 100

ALERT_COLUMNS = (
    Column("seq", "seq", identifier=True),
    Column("time", "ts", identifier=True),
    Column("alert", lambda a: str(a["action"]).removeprefix("alert."), identifier=True),
    Column("owner", "owner_id"),
    Column("identity", "identity_id", wide=True),
    Column("task", "task_id", wide=True),
    Column("details", "details", wide=True),
    Column("reason", "reason"),
)


@click.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify an export offline instead of asking the server.",
)
@json_option
def audit_verify(path: Path | None, as_json: bool) -> None:
    """Check the chain; exit non-zero naming the first bad entry."""
    if path is not None:
        with path.open(encoding="utf-8") as handle:
            try:
                result = verify_chain(read_jsonl(handle)).to_dict()
            except ValueError as exc:
                fail(str(exc))
    else:
        result = get("/v1/audit/verify")
    if as_json:
        emit_json(result)
    elif result["ok"]:
        out.print(
            f"Audit log verified: {result['entries']} entries, head {result['head_hash'][:16]}…"
        )
    if not result["ok"]:
        if not as_json:
            err.print(f"[bold red]audit verification failed:[/] {escape(result['problem'])}")
        sys.exit(2)


@audit.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def audit_export(output: Path | None) -> None:
    """Write the audit log as JSON lines."""
    with client() as api:
        lines = api.stream_lines("/v1/audit/export")
        if output is None:
            for line in lines:
                click.echo(line)
        else:
            with output.open("w", encoding="utf-8") as handle:
                count = 0
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
            err.print(f"Wrote {count} entries to {output}.")


@click.command()
@click.option(
    "--after",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Only alerts after this audit sequence number.",
)
@output_option
def alerts(after: int, output: str) -> None:
    """List alerts: failed revocations, use of an old or exposed static secret, and more."""
    items = all_pages("/v1/alerts", {"after": after, "limit": _ALERT_PAGE}, by_seq(_ALERT_PAGE))
    show_listing(f"{len(items)} alerts", ALERT_COLUMNS, items, output)


COMMANDS = (audit, alerts)
