"""`tether token` and `tether join-token`: API tokens and one-time join tokens."""

from __future__ import annotations

import click

from tether.cli._api import client, get, post
from tether.cli._output import Column, emit_json, json_option, out, output_option, show_listing

TOKEN_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("name", "name"),
    Column("roles", "roles"),
    Column("created", "created_at"),
    Column("created by", "created_by", wide=True),
    Column("expires", "expires_at"),
    Column("revoked", "revoked_at"),
)


@click.group()
def token() -> None:
    """API tokens (roles: admin, auditor, introspect, usage, exposure, key-admin,
    key-approver, owner:<id>)."""


@token.command("create")
@click.option("--name", required=True)
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="admin, auditor, introspect, usage, exposure, key-admin, key-approver, "
    "owner:<id>, pdp or pdp:<application>; repeat for several.",
)
@click.option("--ttl", help="Lifetime, e.g. 30d.")
@json_option
def token_create(name: str, roles: tuple[str, ...], ttl: str | None, as_json: bool) -> None:
    """Create an API token; it is shown once."""
    result = post("/v1/tokens", {"name": name, "roles": list(roles), "ttl": ttl})
    if as_json:
        emit_json(result)
    else:
        out.print(f"Token {result['id']} ({', '.join(result['roles'])}): {result['token']}")


@token.command("list")
@output_option
def token_list(output: str) -> None:
    """List API tokens (never their values)."""
    items = get("/v1/tokens")
    show_listing("API tokens", TOKEN_COLUMNS, items, output)


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke an API token."""
    with client() as api:
        api.request("DELETE", f"/v1/tokens/{token_id}")
    out.print(f"Token {token_id} revoked.")


@click.group("join-token")
def join_token() -> None:
    """One-time join tokens for hosts that cannot present OIDC."""


@join_token.command("create")
@click.option("--identity", required=True)
@click.option("--ttl", default="1h", show_default=True)
@json_option
def join_token_create(identity: str, ttl: str, as_json: bool) -> None:
    """Create a join token for IDENTITY; it is shown once and works once."""
    result = post("/v1/join-tokens", {"identity": identity, "ttl": ttl})
    if as_json:
        emit_json(result)
    else:
        out.print(f"Join token {result['id']} for {identity} (expires {result['expires_at']}):")
        out.print(result["token"])


COMMANDS = (token, join_token)
