"""How Tether names a field in a document: `identities[3].id`, `query.after`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def field_path(parts: Iterable[Any], whole: str = "(document)") -> str:
    """Keys joined by dots, list indexes in brackets; `whole` when there are no parts."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or whole
