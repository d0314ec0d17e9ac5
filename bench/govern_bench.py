"""Governance: a full evaluation of 100,000 identities with 1,000,000 usage rollups, and
the incremental re-evaluation after one identity changes; time and memory of both.

Memory is the process's resident set: its peak is reset (Linux `clear_refs`) before each
phase, so each figure is that phase's own high-water mark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import statistics
import time
from pathlib import Path
from typing import Any

from bench.estate_bench import estate
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.model import Usage
from tether.store import UsageRollup


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _reset_peak() -> None:
    # Not Linux: the peak is then the process's whole life.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rollups(ids: list[str], per_identity: int, now: dt.datetime) -> list[UsageRollup]:
    rng = random.Random(7)
    out = []
    for identity_id in ids:
        for day in range(per_identity):
            at = now - dt.timedelta(days=day, minutes=rng.randrange(1440))
            out.append(
                UsageRollup(
                    identity_id=identity_id,
                    day=at.date(),
                    first_seen=at,
                    last_seen=at,
                    credential=f"lse_{identity_id}",
                    entitlement="api-read",
                    count=rng.randrange(1, 500),
                    facets={
                        "source": (f"10.0.{rng.randrange(4)}.{rng.randrange(250)}",),
                        "scope": ("read",),
                        "action": ("exchange",),
                    },
                )
            )
    return out


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 100_000
    per_identity = 10
    node = Tether(Settings(home=tmp, database_url=f"sqlite:///{tmp / 'tether.db'}"))
    node.initialize(1, 1)
    doc = estate(n)
    started = time.perf_counter()
    node.estate.apply(parse_estate(doc), actor="bench", document=doc)
    apply_s = time.perf_counter() - started
    node.view.reload()
    now = node.clock()
    ids = sorted(node.view.current.identities)
    started = time.perf_counter()
    for start in range(0, n, 5_000):
        batch = _rollups(ids[start : start + 5_000], per_identity, now)
        with node.store.transaction() as tx:
            tx.merge_usage(batch)
    load_s = time.perf_counter() - started
    rollups = n * per_identity

    _reset_peak()
    before = _rss_mb("VmRSS")
    started = time.perf_counter()
    first = node.govern.evaluate_now()
    first_s = time.perf_counter() - started
    first_peak = _rss_mb("VmHWM")

    _reset_peak()
    started = time.perf_counter()
    steady = node.govern.evaluate_now()
    steady_changes = steady.opened + steady.resolved
    steady_s = time.perf_counter() - started
    steady_peak = _rss_mb("VmHWM")

    _reset_peak()
    timings = []
    for i in range(30):
        identity_id = ids[(i * 7919) % n]
        node.govern.record(
            Usage(
                identity_id,
                node.clock(),
                "exchange",
                credential="lse_x",
                entitlement="api-read",
                source=f"192.0.2.{i}",
            )
        )
        started = time.perf_counter()
        node.govern.evaluate_now([identity_id])
        timings.append((time.perf_counter() - started) * 1000)
    incremental_peak = _rss_mb("VmHWM")
    node.stop()
    return {
        "identities": n,
        "usage_rollups": rollups,
        "apply_seconds": round(apply_s, 1),
        "rollup_load_seconds": round(load_s, 1),
        "rss_before_evaluation_mb": before,
        "full_first_seconds": round(first_s, 2),
        "full_first_findings_opened": first.opened,
        "full_first_peak_rss_mb": first_peak,
        "full_steady_seconds": round(steady_s, 2),
        "full_steady_peak_rss_mb": steady_peak,
        "full_steady_changes": steady_changes,
        "incremental_one_identity_ms": {
            "p50": round(statistics.median(timings), 2),
            "max": round(max(timings), 2),
        },
        "incremental_peak_rss_mb": incremental_peak,
        "targets": {"full_seconds": 60, "full_rss_mb": 1024, "incremental_ms": 50},
    }
