"""`tether ca`: the trust domain's CA (SPIFFE): its authorities, bundle and rotation."""

from __future__ import annotations

import click

from tether.cli._api import get, post
from tether.cli._output import emit_json, output_option, show_record


@click.group()
def ca() -> None:
    """The trust domain's CA: authorities, SPIFFE bundle, rotation."""


@ca.command("show")
@output_option
def ca_show(output: str) -> None:
    """The trust domain, the bundle's sequence and the authorities it publishes."""
    show_record("trust domain CA", get("/v1/spiffe/ca"), output)


@ca.command("bundle")
def ca_bundle() -> None:
    """The SPIFFE bundle (JWKS with x509-svid and jwt-svid keys), for relying parties."""
    emit_json(get("/v1/spiffe/bundle"))


@ca.command("rotate")
@click.option(
    "--activate",
    is_flag=True,
    help="Also make the prepared authority sign now (after clients have its bundle).",
)
@output_option
def ca_rotate(activate: bool, output: str) -> None:
    """Prepare the next authority (published at once, signing nothing yet)."""
    show_record("trust domain CA", post("/v1/spiffe/ca/rotate", {"activate": activate}), output)


COMMANDS = (ca,)
