"""`apply` of an estate of 10,000 identities: first apply, no-op re-apply, one change."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.model import Kind

KINDS = [k.value for k in Kind]


def estate(n: int) -> dict[str, Any]:
    identities = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        identity: dict[str, Any] = {
            "id": f"nhi-{i:06d}",
            "kind": kind,
            "owner": f"team-{i % 50}",
            "purpose": f"Purpose {i}",
            "justification": f"CHG-{i}",
            "environment": ["prod", "staging", "dev"][i % 3],
            "region": "eu-west-1",
            "entitlements": [{"profile": "api-read", "scopes": ["read"]}],
            "labels": {"system": f"sys-{i % 100}"},
        }
        if kind in ("workload", "agent"):
            identity["attest"] = {"issuer": "ci", "claims": {"repository": f"acme/r{i}"}}
        identities.append(identity)
    return {
        "version": 1,
        "owners": [{"id": f"team-{i}", "contact": f"t{i}@example.com"} for i in range(50)],
        "issuers": [
            {
                "id": "ci",
                "issuer": "https://ci.example.com",
                "audiences": ["tether"],
                "jwks_uri": "https://ci.example.com/jwks",
            }
        ],
        "profiles": [
            {
                "id": "api-read",
                "provider": "jwt",
                "audience": "https://api.example.com",
                "scopes": ["read", "list"],
                "max_ttl": "15m",
            }
        ],
        "identities": identities,
    }


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    n = 1_000 if quick else 10_000
    node = Tether(Settings(home=tmp, database_url=f"sqlite:///{tmp / 'tether.db'}"))
    node.initialize(1, 1)
    doc = estate(n)

    def timed_apply() -> tuple[float, dict[str, int]]:
        started = time.perf_counter()
        plan = node.estate.apply(parse_estate(doc), actor="bench", document=doc)
        return time.perf_counter() - started, plan.counts()

    first, first_counts = timed_apply()
    noop, noop_counts = timed_apply()
    doc["identities"][n // 2]["purpose"] = "changed"
    one, one_counts = timed_apply()
    node.stop()
    assert noop_counts["create"] == noop_counts["update"] == 0 and one_counts["update"] == 1
    return {
        "identities": n,
        "first_apply_seconds": round(first, 2),
        "first_apply_changes": first_counts,
        "noop_reapply_seconds": round(noop, 2),
        "one_change_apply_seconds": round(one, 2),
    }
