"""`tether apply`, `tether estate schema` and `tether identity`: the declared estate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tether.cli._api import all_pages, get, post
from tether.cli._output import (
    Column,
    emit_json,
    json_option,
    out,
    output_option,
    show_listing,
    show_record,
)
from tether.estate import estate_schema, load_estate_file

_SIGNS = {"create": "+", "update": "~", "retire": "-", "delete": "-"}

IDENTITY_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("kind", "kind"),
    Column("owner", "owner", identifier=True),
    Column("environment", "environment"),
    Column("region", "region", wide=True),
    Column("vendor", "vendor", wide=True),
    Column("status", "status"),
    Column("justification", "justification", wide=True),
    Column("expires", "expires", wide=True),
    Column("risk", "risk"),
    Column("purpose", "purpose"),
)


def _print_plan(plan: dict[str, Any], dry_run: bool) -> None:
    summary = plan["summary"]
    for change in plan["changes"]:
        sign = _SIGNS[change["action"]]
        fields = f" ({', '.join(change['fields'])})" if change["action"] == "update" else ""
        out.print(
            f"  {sign} {change['action']:<6} {change['type']} {change['id']}{fields}", markup=False
        )
    for held in plan.get("withdrawn", []):
        out.print(f"  ! withdrawn {held['message']}", markup=False)
    counts = ", ".join(f"{n} to {a}" for a, n in summary.items())
    if not plan["changes"]:
        out.print("No changes: the stored estate matches the file.")
    elif dry_run:
        out.print(f"Plan: {counts}. Dry run: nothing was changed.")
    else:
        applied = ", ".join(f"{n} {a}d" for a, n in summary.items() if n)
        out.print(f"Applied: {applied}.")


@click.command()
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Estate file (YAML).",
)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@json_option
def apply(path: Path, dry_run: bool, as_json: bool) -> None:
    """Validate an estate file, show the plan and apply it in one transaction."""
    document = load_estate_file(path)
    plan = post("/v1/estate/apply", document, dry_run=str(dry_run).lower())
    emit_json(plan) if as_json else _print_plan(plan, dry_run)


@click.group()
def estate() -> None:
    """The estate file format."""


@estate.command("schema")
def estate_schema_cmd() -> None:
    """Print the estate file's JSON Schema."""
    emit_json(estate_schema())


@click.group()
def identity() -> None:
    """The inventory of non-human identities."""


@identity.command("list")
@click.option("--kind")
@click.option("--owner")
@click.option("--environment")
@click.option("--status", type=click.Choice(["active", "suspended", "retired"]))
@click.option(
    "--sort", type=click.Choice(["id", "risk"]), default="id", help="risk: riskiest first."
)
@click.option("--limit", type=click.IntRange(1, 10000), default=None)
@output_option
def identity_list(output: str, sort: str, limit: int | None, **filters: str | None) -> None:
    """List identities, filtered by kind, owner, environment or status."""
    if sort == "risk":
        items = get("/v1/identities", sort="risk", limit=limit or 1000, **filters)["items"]
    else:
        items = all_pages("/v1/identities", filters)
        items = items[:limit] if limit else items
    show_listing(f"{len(items)} identities", IDENTITY_COLUMNS, items, output)


@identity.command("show")
@click.argument("identity_id")
@output_option
def identity_show(identity_id: str, output: str) -> None:
    """Show one identity, its justification and its kind's controls."""
    spec = get(f"/v1/identities/{identity_id}")
    show_record(f"identity {spec['id']}", spec, output)


COMMANDS = (apply, estate, identity)
