"""`tether init|unseal|seal|status|operator`: the barrier and its keys."""

from __future__ import annotations

import sys
from typing import Any

import click

from tether.cli._api import get, post
from tether.cli._output import emit_json, json_option, out


def _print_status(status: dict[str, Any]) -> None:
    state = "sealed" if status["sealed"] else "unsealed"
    if not status["initialized"]:
        state = "not initialized"
    out.print(f"Tether is {state}.")
    if status["initialized"]:
        out.print(f"  unseal threshold: {status['threshold']} of {status['shares']} shares")
        if status["sealed"]:
            out.print(f"  unseal progress:  {status['progress']}/{status['threshold']}")
        else:
            out.print(f"  keyring term:     {status['term']}")
    if status.get("dev"):
        out.print("  mode:             dev (auto-unseal from a local key file)")


@click.command()
@click.option("--shares", type=click.IntRange(1, 255), default=5, show_default=True)
@click.option("--threshold", type=click.IntRange(1, 255), default=3, show_default=True)
@json_option
def init(shares: int, threshold: int, as_json: bool) -> None:
    """Initialize: split the root key into SHARES and print them with the root token, once."""
    result = post("/v1/sys/init", {"shares": shares, "threshold": threshold})
    if as_json:
        emit_json({"shares": result["shares"], "root_token": result["root_token"]})
        return
    for number, share in enumerate(result["shares"], 1):
        out.print(f"Unseal share {number}: {share}")
    out.print(f"Root token: {result['root_token']}")
    out.print(
        f"\nThese are shown once. Give each share to a different person; any {threshold} of "
        "them unseal Tether. Store the root token safely and create narrower tokens."
    )


@click.command()
@click.argument("share", required=False)
@json_option
def unseal(share: str | None, as_json: bool) -> None:
    """Give one unseal share (or `-` / nothing to read it from stdin)."""
    if share in (None, "-"):
        share = sys.stdin.readline().strip()
    status = post("/v1/sys/unseal", {"share": share})
    emit_json(status) if as_json else _print_status(status)


@click.command()
@json_option
def seal(as_json: bool) -> None:
    """Seal Tether: drop every key from memory until it is unsealed again."""
    status = post("/v1/sys/seal")
    emit_json(status) if as_json else _print_status(status)


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Show whether Tether is initialized and sealed."""
    result = get("/v1/sys/status")
    emit_json(result) if as_json else _print_status(result)


@click.group()
def operator() -> None:
    """Operator tasks on the barrier."""


@operator.command("rotate")
@json_option
def operator_rotate(as_json: bool) -> None:
    """Add a keyring term; new writes use it and old records are rewrapped in the background."""
    result = post("/v1/sys/rotate")
    emit_json(result) if as_json else out.print(
        f"Keyring rotated: new writes use term {result['term']}."
    )


COMMANDS = (init, unseal, seal, status, operator)
