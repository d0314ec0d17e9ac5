"""PostgreSQL credentials: issued and revoked per second, and task end → session killed.

Runs against a throwaway cluster started from the installed binaries (scram-sha-256),
the same one the tests use.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import psycopg

from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.lease import RevokeTarget


def _estate() -> dict[str, Any]:
    return {
        "version": 1,
        "owners": [{"id": "team", "contact": "team@example.com"}],
        "profiles": [
            {
                "id": "db-ro",
                "provider": "postgres",
                "target": "payments-db",
                "grants": {"schema": "payments", "privileges": ["SELECT"]},
                "max_ttl": "1h",
            }
        ],
        "identities": [
            {
                "id": "reporting",
                "kind": "service_account",
                "owner": "team",
                "purpose": "bench",
                "justification": "BENCH",
                "environment": "prod",
                "entitlements": [{"profile": "db-ro"}],
            }
        ],
    }


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    from tests.pg_cluster import running_cluster

    count = 20 if quick else 100
    with running_cluster() as cluster:
        node = Tether(Settings(home=tmp, database_url=f"sqlite:///{tmp / 'pg.db'}"))
        node.initialize(1, 1)
        node.targets.add("payments-db", "postgres", cluster.admin_dsn, "bench")
        doc = _estate()
        node.estate.apply(parse_estate(doc), actor="bench", document=doc)
        node.view.reload()
        try:

            def task_token() -> tuple[str, Any]:
                join, _ = node.issuance.create_join_token(
                    "reporting", dt.timedelta(minutes=5), "bench"
                )
                started = node.issuance.start_task(join, "bench", dt.timedelta(hours=1), None)
                return started.token, started.task

            token, task = task_token()
            t0 = time.perf_counter()
            for _ in range(count):
                node.issuance.issue_credential("db-ro", token)
            issue_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            node.leases.revoke(RevokeTarget(task_id=task.id), "bench", "bench")
            while node.leases.retry_revocations(limit=1000):
                pass
            revoke_s = time.perf_counter() - t0

            # The worker does external revocations in a server; here it runs only now, so
            # the loop above measured issue and revoke alone, single-threaded.
            node.start()
            kills = []
            for _ in range(3 if quick else 10):
                token, task = task_token()
                issued = node.issuance.issue_credential("db-ro", token)
                session = psycopg.connect(cluster.dsn(issued.details["username"], issued.secret))
                session.execute("SELECT 1")
                t0 = time.perf_counter()
                node.leases.end_task(task, "bench", "bench")
                while True:
                    try:
                        session.execute("SELECT 1")
                    except psycopg.OperationalError:
                        break
                    time.sleep(0.001)
                kills.append(time.perf_counter() - t0)
                session.close()
        finally:
            node.stop()
    kills.sort()
    return {
        "credentials": count,
        "issued_per_s": round(count / issue_s, 1),
        "revoked_per_s": round(count / revoke_s, 1),
        "task_end_to_session_killed_s": {
            "median": round(kills[len(kills) // 2], 3),
            "max": round(kills[-1], 3),
            "target": 1.0,
        },
    }
