"""Factories for estates and nodes. Every value is generated here, never a live secret."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tether.model import Kind

KINDS = [k.value for k in Kind]


def estate_document(identities: int = 8, *, seed_owner: str = "team-a") -> dict[str, Any]:
    """A valid estate with `identities` identities cycling through every kind."""
    doc: dict[str, Any] = {
        "version": 1,
        "owners": [
            {"id": seed_owner, "name": "Team A", "contact": "a-oncall@example.com"},
            {"id": "team-b", "name": "Team B", "contact": "b-oncall@example.com"},
        ],
        "vendors": [{"id": "vendor-x", "contract_ends": "2027-03-31"}],
        "issuers": [
            {
                "id": "ci",
                "preset": "github-actions",
                "issuer": "https://token.actions.githubusercontent.com",
                "jwks_uri": "https://token.actions.githubusercontent.com/.well-known/jwks",
                "audiences": ["tether"],
            }
        ],
        "profiles": [
            {
                "id": "api-read",
                "provider": "jwt",
                "audience": "https://api.example.com",
                "scopes": ["read", "list"],
                "max_ttl": "15m",
            },
            {
                "id": "db-ro",
                "provider": "postgres",
                "target": "db",
                "max_ttl": "1h",
                "grants": {"schema": "app", "privileges": ["SELECT"]},
            },
        ],
        "identities": [],
        "kinds": {"api_key": {"max_ttl": "90d", "rotate_every": "30d"}},
    }
    for index in range(identities):
        kind = KINDS[index % len(KINDS)]
        identity: dict[str, Any] = {
            "id": f"nhi-{index:05d}",
            "kind": kind,
            "owner": seed_owner if index % 2 == 0 else "team-b",
            "purpose": f"Purpose of identity {index}",
            "justification": f"CHG-{1000 + index}",
            "environment": ["prod", "staging", "dev"][index % 3],
            "region": "eu-west-1",
            "criticality": ["low", "medium", "high", "critical"][index % 4],
            "entitlements": [{"profile": "api-read", "scopes": ["read"]}],
        }
        if kind in ("workload", "agent"):
            identity["attest"] = {"issuer": "ci", "claims": {"repository": f"acme/repo-{index}"}}
            identity["approval"] = {"by": "dana@example.com", "expires": "2027-01-31"}
        if kind == "api_key":
            identity["vendor"] = "vendor-x"
        doc["identities"].append(identity)
    return doc


def mutate(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out.update(changes)
    return out


def write_estate(path: Path, doc: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
