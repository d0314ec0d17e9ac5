"""`tether policy ...`: offline policy tooling."""

from __future__ import annotations

import click


@click.group()
def policy() -> None:
    """Cedar policies: test them offline against JSON cases."""
