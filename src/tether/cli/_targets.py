"""`tether target` and `tether creds`: target systems and credentials for them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from tether.cli._api import client, get, post
from tether.cli._output import (
    Column,
    emit_json,
    err,
    json_option,
    out,
    output_option,
    show_listing,
    show_record,
)
from tether.client import TetherClient
from tether.targets import kind_names

TARGET_COLUMNS = (Column("name", "name", identifier=True), Column("kind", "kind"))


@click.group()
def target() -> None:
    """Target systems (PostgreSQL, Redis) Tether issues credentials for."""


@target.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(kind_names()), required=True)
@click.option(
    "--dsn-file",
    type=click.File("r"),
    required=True,
    help="File holding the admin DSN (`-` for stdin); it is never printed.",
)
def target_add(name: str, kind: str, dsn_file: Any) -> None:
    """Register a target; its DSN is stored only through the barrier."""
    dsn = dsn_file.read().strip()
    post("/v1/targets", {"name": name, "kind": kind, "dsn": dsn})
    out.print(f"Target {name} ({kind}) registered.")


@target.command("list")
@output_option
def target_list(output: str) -> None:
    """List targets (names and kinds, never their DSNs)."""
    items = get("/v1/targets")["items"]
    show_listing(f"{len(items)} targets", TARGET_COLUMNS, items, output)


@target.command("health")
@click.argument("name")
@output_option
def target_health(name: str, output: str) -> None:
    """Check that Tether can reach NAME and administer it; exit 2 if it cannot."""
    report = get(f"/v1/targets/{name}/health")
    show_record(f"target {name}", report, output)
    if not report.get("ok"):
        if output in ("table", "wide"):
            why = report.get("error") or "it cannot be administered"
            err.print(f"[bold red]target {escape(name)} is not healthy:[/] {escape(why)}")
        sys.exit(2)


@target.command("rotate-root")
@click.argument("name")
def target_rotate_root(name: str) -> None:
    """Replace the admin password Tether uses for NAME, so no person knows it."""
    post(f"/v1/targets/{name}/rotate-root")
    out.print(f"Root credential of {name} rotated.")


@click.command()
@click.argument("kind", type=click.Choice(kind_names()))
@click.argument("profile")
@click.option("--task", "task_id", help="Issue under this task.")
@click.option("--ttl")
@click.option(
    "--attestation-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Attest with this JWT instead of presenting a task token (TETHER_TOKEN).",
)
@json_option
def creds(
    kind: str,
    profile: str,
    task_id: str | None,
    ttl: str | None,
    attestation_file: Path | None,
    as_json: bool,
) -> None:
    """Get a short-lived credential for a database or cache profile."""
    bearer = attestation_file.read_text().strip() if attestation_file else None
    with TetherClient(token=bearer) if bearer else client() as api:
        result = api.post(f"/v1/creds/{profile}", {"task": task_id, "ttl": ttl})
    if as_json:
        emit_json(result)
        return
    location = result.get("dsn") or result.get("url")
    out.print(
        f"{kind} credential, lease {result['lease']}, until {result['expires_at']} "
        f"(bounded by {result['bounded_by']})"
    )
    out.print(f"  connect:  {location}", markup=False)
    out.print(f"  username: {result['username']}", markup=False)
    out.print(f"  password: {result['password']}", markup=False)


COMMANDS = (target, creds)
