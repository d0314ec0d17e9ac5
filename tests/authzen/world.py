"""The records application of the AuthZEN tests: users in groups, records with owners.

Declared in data/estate.yaml with its Cedar file beside it (read the way `tether apply -f`
reads it): alice is an admin, carol a viewer, bob owns r1 and the archived r3, dave r2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.app import Tether
from tether.estate import load_estate_file, parse_estate

ESTATE = Path(__file__).with_name("data") / "estate.yaml"


def records_document(**extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = load_estate_file(ESTATE)
    document.update(extra)
    return document


def apply(node: Tether, document: dict[str, Any]) -> None:
    node.estate.apply(parse_estate(document), "test", document)


def evaluation(subject: str, action: str, resource: str, **extra: Any) -> dict[str, Any]:
    return {
        "subject": {"type": "User", "id": subject},
        "action": {"name": action},
        "resource": {"type": "Record", "id": resource},
        **extra,
    }
