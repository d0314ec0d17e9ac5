"""The `tether` command. Admin commands are clients of the server (TETHER_ADDR, TETHER_TOKEN)."""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    # `main` is loaded on first use: a server's worker process (tether.cli._worker) is
    # part of this package but needs none of the commands or their HTTP client.
    if name == "main":
        from tether.cli._main import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
