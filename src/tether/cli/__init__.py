"""The `tether` command. Admin commands are clients of the server (TETHER_ADDR, TETHER_TOKEN)."""

from tether.cli._main import main

__all__ = ["main"]
