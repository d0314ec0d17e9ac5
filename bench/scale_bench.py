"""1,000,000 active leases (design.md §6): how long the server takes to start and unseal,
its memory per process, and how fast its own lifecycle worker expires leases among them.

The database is built in-process (one node, SQLite), then `tether serve` is started on
it as a user would: the figures are the server's, measured from outside.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.issuance_bench import Idp, _free_port, estate
from tether._internal.timeutil import utcnow
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.model import Lease, LeaseState

_CHUNK = 50_000


def _build(home: Path, url: str, leases: int) -> str:
    """The database with `leases` active leases; returns the unseal share."""
    node = Tether(Settings(home=home, database_url=url))
    share = node.initialize(1, 1).shares[0]
    doc = estate(Idp())
    node.estate.apply(parse_estate(doc), actor="bench", document=doc)
    now = utcnow()
    later = now + dt.timedelta(hours=2)
    for start in range(0, leases, _CHUNK):
        batch = [
            Lease(
                id=f"lse_scale{n:08d}",
                identity_id="deployer",
                owner_id="team",
                provider="token",
                issued_at=now,
                expires_at=later + dt.timedelta(microseconds=n),
                state=LeaseState.ACTIVE,
                profile_id="opaque",
                token_hash=secrets.token_hex(32),
            )
            for n in range(start, min(leases, start + _CHUNK))
        ]
        with node.store.transaction() as tx:
            tx.insert_leases(batch)
    node.stop()
    return share


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _processes(pid: int) -> list[int]:
    """The server and every process below it (workers, if it has any)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            queue += [int(c) for c in children.read_text().split()]
    return found


def _peak_rss(pid: int) -> float:
    return max(_rss_mb(p) for p in _processes(pid))


def _expired(db: Path) -> int:
    # Counting the few expired rather than the million active: the bench's own reads must
    # not take the cores the server expires with.
    with sqlite3.connect(db) as conn:
        query = "SELECT count(*) FROM leases WHERE state = 'expired'"
        return int(conn.execute(query).fetchone()[0])


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    leases = 100_000 if quick else 1_000_000
    expiring = 20_000 if quick else 200_000
    home, db = tmp / "home", tmp / "scale.db"
    url = f"sqlite:///{db}"
    t0 = time.perf_counter()
    share = _build(home, url, leases)
    built = time.perf_counter() - t0

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TETHER_HOME": str(home),
        "TETHER_DATABASE_URL": url,
        "TETHER_LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                httpx.get(f"{base}/v1/sys/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.01)
        answering = time.perf_counter() - started
        httpx.post(f"{base}/v1/sys/unseal", json={"share": share}, timeout=30).raise_for_status()
        unsealed = time.perf_counter() - started
        time.sleep(2)  # a few sweeps over the million leases
        rss_idle = _peak_rss(server.pid)

        # Expiry among the million: move the end of `expiring` leases into the past and
        # let the server's own lifecycle worker end them (audit entries included).
        past = (utcnow() - dt.timedelta(seconds=1)).astimezone(dt.UTC).replace(tzinfo=None)
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE id IN "
                "(SELECT id FROM leases WHERE state = 'active' ORDER BY id LIMIT ?)",
                (past.isoformat(" ", "microseconds"), expiring),
            )
        t_expiry = time.perf_counter()
        peak = rss_idle
        while _expired(db) < expiring:
            peak = max(peak, _peak_rss(server.pid))
            time.sleep(0.25)
        expiry_seconds = time.perf_counter() - t_expiry
        processes = len(_processes(server.pid))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return {
        "active_leases": leases,
        "build_seconds": round(built, 1),
        "server_processes": processes,
        "start_to_answering_s": round(answering, 2),
        "start_to_unsealed_s": round(unsealed, 2),
        "rss_mb_per_process_idle": rss_idle,
        "rss_mb_per_process_peak_during_expiry": peak,
        "expired": expiring,
        "expiry_per_s": round(expiring / expiry_seconds),
        "targets": {"start_s": 3, "rss_mb": 400, "expiry_per_s": 10_000},
    }
