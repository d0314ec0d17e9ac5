"""`tether credential`: static (legacy) secrets kept by Tether and rotated in stages.

A secret is printed only by `credential show --reveal`, and then only the value the server
gave the caller (a reader identity's task token); listings and metadata never hold one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from tether.cli._api import get, post
from tether.cli._output import Column, json_option, out, output_option, show_listing, show_record
from tether.targets import static_kinds

#: Shown in place of a secret that was not asked for.
_HIDDEN = "(hidden: --reveal prints it)"


def _current(credential: Mapping[str, Any]) -> Any:
    return next((v["number"] for v in credential["versions"] if v["state"] == "current"), None)


CREDENTIAL_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("kind", "kind"),
    Column("owner", "owner", identifier=True),
    Column("readers", "readers"),
    Column("version", _current),
    Column("overlap", "overlap", wide=True),
    Column("rotate every", "rotate_every"),
    Column("last rotated", "last_rotated_at"),
    Column("target", "target", wide=True),
    Column("users", "users", wide=True),
)


@click.group()
def credential() -> None:
    """Static credentials: vaulted secrets with staged rotation and exposure response."""


@credential.command("list")
@output_option
def credential_list(output: str) -> None:
    """List static credentials and their versions (never a secret)."""
    items = get("/v1/credentials")["items"]
    show_listing(f"{len(items)} credentials", CREDENTIAL_COLUMNS, items, output)


@credential.command("show")
@click.argument("credential_id")
@click.option(
    "--reveal",
    is_flag=True,
    help="Print the secret (given only to a reader identity's task token as TETHER_TOKEN).",
)
@output_option
def credential_show(credential_id: str, reveal: bool, output: str) -> None:
    """Show a credential: its metadata (admin), or its current version (a reader's task)."""
    item = get(f"/v1/credentials/{credential_id}")
    if "value" in item and not reveal:
        item = {k: v for k, v in item.items() if k != "value"}
        if output in ("table", "wide"):
            item["value"] = _HIDDEN
    show_record(f"credential {credential_id}", item, output)


@credential.command("add")
@click.argument("credential_id")
@click.option("--owner", required=True, help="The owner accountable for it.")
@click.option(
    "--reader", "readers", multiple=True, required=True, help="An identity that may read it."
)
@click.option(
    "--kind",
    help="static (the default: Tether only vaults it) or the static kind of a target: "
    + ", ".join(static_kinds())
    + ".",
)
@click.option("--overlap", help="How long an old version stays valid after a rotation.")
@click.option("--rotate-every", help="Rotate on this schedule, e.g. 30d (the default).")
@click.option("--no-schedule", is_flag=True, help="Rotate only when asked.")
@click.option("--target", help="A target-backed kind: the target whose role it is.")
@click.option("--users", nargs=2, help="A target-backed kind: the two roles it alternates between.")
@click.option("--grant-from", help="A target-backed kind: the role whose grants they get.")
@click.option(
    "--value-file",
    type=click.File("r"),
    help="File holding the first value (`-` for stdin); default: Tether generates one.",
)
@output_option
def credential_add(credential_id: str, output: str, **options: Any) -> None:
    """Vault a static credential; only its readers' task tokens can read it."""
    body = _create_body(credential_id, options)
    created = post("/v1/credentials", body)
    _print_versions(created, output)


def _create_body(credential_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """The request body: only what was given, so the server's defaults hold otherwise."""
    value_file = options.pop("value_file")
    no_schedule = options.pop("no_schedule")
    body: dict[str, Any] = {"id": credential_id, "readers": list(options.pop("readers"))}
    body.update({k: v for k, v in options.items() if v})
    if no_schedule:
        body["rotate_every"] = None
    if value_file is not None:
        body["value"] = value_file.read().strip()
    return body


@credential.command("rotate")
@click.argument("credential_id")
@click.option("--overlap", help="How long the old version stays valid (default: its setting).")
@json_option
def credential_rotate(credential_id: str, overlap: str | None, as_json: bool) -> None:
    """Rotate a static credential in stages: new, tested, promoted; the old one overlaps."""
    result = post(f"/v1/credentials/{credential_id}/rotate", {"overlap": overlap})
    _print_versions(result, "json" if as_json else "table")


@credential.command("exposed")
@click.argument("credential_id")
@click.option("--evidence", required=True, help="Where it was seen, for the audit log.")
@output_option
def credential_exposed(credential_id: str, evidence: str, output: str) -> None:
    """Report a credential exposed: rotate at once and retire the exposed version."""
    result = post(f"/v1/credentials/{credential_id}/exposed", {"evidence": evidence})
    _print_versions(result, output)
    retired = [v["number"] for v in result["versions"] if v["state"] == "retired"]
    if retired and output in ("table", "wide"):
        out.print(f"  version {max(retired)} was retired at once: it no longer works.")


def _print_versions(credential: dict[str, Any], output: str) -> None:
    if output not in ("table", "wide"):
        show_record(f"credential {credential['id']}", credential, output)
        return
    out.print(f"{credential['id']}: version {_current(credential)} is current.")
    for version in credential["versions"]:
        if version["state"] == "previous":
            number, until = version["number"], version["overlap_ends_at"]
            out.print(f"  version {number} stays valid until {until}.")


COMMANDS = (credential,)
#: `tether rotate ID`, from before `tether credential`: the same command.
ROTATE = credential_rotate
