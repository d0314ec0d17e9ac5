"""Real credentials for real systems (issue #4), through a real `tether serve` process.

A throwaway PostgreSQL cluster with scram-sha-256 (so a revoked password is really
refused) is the target. A workload gets a role under a task, reads, is refused writes;
the task ends and its open session dies and new logins fail. Crashes at either side of
the role's creation leave no untracked role and no live lease without its role. An
outage delays revocation, raises alerts, and loses nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.factories import write_estate
from tests.pg_cluster import PgCluster
from tests.scenario.harness import Server

pytestmark = pytest.mark.service

CRASHING_SERVER = Path(__file__).parent / "_crashing_server.py"


def _estate() -> dict[str, Any]:
    return {
        "version": 1,
        "owners": [{"id": "team-payments", "contact": "payments@example.com"}],
        "profiles": [
            {
                "id": "payments-db-ro",
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
                "owner": "team-payments",
                "purpose": "Reads payments for reports",
                "justification": "DATA-1",
                "environment": "prod",
                "entitlements": [{"profile": "payments-db-ro"}],
            }
        ],
    }


class Node:
    def __init__(self, server: Server, share: str, root: str) -> None:
        self.server, self.share, self.root = server, share, root

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.root}"}

    def restart(self, crash_at: str | None = None, **env: str) -> None:
        """Restart the server; with `crash_at`, one that kills itself there mid-issuance."""
        self.server.stop()
        self.server.extra_env = env
        self.server.launcher = [sys.executable, "-m", "tether"]
        if crash_at is not None:
            self.server.launcher = [sys.executable, str(CRASHING_SERVER), crash_at]
        self.server.start()
        assert self.server.cli("unseal", self.share).code == 0

    def task(self) -> dict[str, Any]:
        join = httpx.post(
            f"{self.server.addr}/v1/join-tokens", headers=self.admin, json={"identity": "reporting"}
        ).json()["token"]
        response = httpx.post(
            f"{self.server.addr}/v1/tasks",
            json={"name": "report"},
            headers={"Authorization": f"Bearer {join}"},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def creds(self, task_token: str, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.server.addr}/v1/creds/payments-db-ro",
            json=body,
            headers={"Authorization": f"Bearer {task_token}"},
            timeout=30,
        )

    def lease(self, lease_id: str) -> dict[str, Any]:
        return dict(
            httpx.get(f"{self.server.addr}/v1/leases/{lease_id}", headers=self.admin).json()
        )

    def leases(self) -> list[dict[str, Any]]:
        return list(
            httpx.get(
                f"{self.server.addr}/v1/leases", params={"limit": 10000}, headers=self.admin
            ).json()["items"]
        )


def _tether_roles(cluster: PgCluster) -> set[str]:
    with cluster.superuser() as db:
        rows = db.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'tether\\_%'")
        return {str(r[0]) for r in rows}


def _wait(condition: Any, limit: float = 30.0) -> float:
    """Seconds until condition() holds; the limit only stops a hung test."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)
    return time.monotonic() - started


def _dead(session: psycopg.Connection[Any]) -> bool:
    try:
        session.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


@pytest.fixture
def node(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[Node]:
    server = Server(home=tmp_path / "home")
    server.extra_env = {}
    server.start()
    init = server.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
    server.token = init["root_token"]
    assert server.cli("unseal", init["shares"][0]).code == 0
    added = server.cli(
        "target",
        "add",
        "payments-db",
        "--kind",
        "postgres",
        "--dsn-file",
        "-",
        stdin=pg_cluster.admin_dsn,
    )
    assert added.code == 0, added.stderr
    assert pg_cluster.admin_password not in added.stdout + added.stderr
    assert server.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", _estate()))).code == 0
    yield Node(server, init["shares"][0], init["root_token"])
    server.stop()
    assert pg_cluster.admin_password.encode() not in server.log_file.read_bytes()


def test_task_end_terminates_the_session_and_refuses_new_logins(
    node: Node, pg_cluster: PgCluster
) -> None:
    task = node.task()
    issued = node.creds(task["token"])
    assert issued.status_code == 200, issued.text
    creds = issued.json()
    dsn = pg_cluster.dsn(creds["username"], creds["password"])
    session = psycopg.connect(dsn, connect_timeout=5)
    assert session.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("INSERT INTO payments.accounts VALUES (99, 'x', 0)")
    session.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute("SELECT * FROM other.secrets")
    session.rollback()
    assert node.lease(creds["lease"])["state"] == "active"

    ended = httpx.post(
        f"{node.server.addr}/v1/tasks/{task['id']}/end",
        headers={"Authorization": f"Bearer {task['token']}"},
    )
    assert ended.status_code == 200

    _wait(lambda: _dead(session))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)
    _wait(lambda: node.lease(creds["lease"])["state"] == "revoked")
    assert creds["username"] not in _tether_roles(pg_cluster)


@pytest.mark.parametrize("crash_at", ["after-lease-commit", "after-provider-issue"])
def test_a_crash_around_role_creation_leaves_nothing_untracked(
    node: Node, pg_cluster: PgCluster, crash_at: str
) -> None:
    task = node.task()
    node.restart(crash_at, TETHER_PENDING_GRACE="1", TETHER_RECONCILE_INTERVAL="1")
    with pytest.raises(httpx.HTTPError):
        node.creds(task["token"])
    assert node.server.process is not None and node.server.process.wait(timeout=10) == -9
    node.restart(TETHER_PENDING_GRACE="1", TETHER_RECONCILE_INTERVAL="1")

    def settled() -> bool:
        # No issuance left in flight, and no role without a live lease (none is live now).
        in_flight = [x for x in node.leases() if x["state"] in ("pending", "revoking")]
        return not in_flight and not _tether_roles(pg_cluster)

    _wait(settled)
    interrupted = [x for x in node.leases() if x["provider"] == "postgres"]
    assert interrupted and all(x["state"] == "revoked" for x in interrupted)
    # And the node still issues working credentials afterwards.
    fresh = node.creds(task["token"]).json()
    with psycopg.connect(pg_cluster.dsn(fresh["username"], fresh["password"])) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)


def test_an_outage_delays_revocation_raises_alerts_and_loses_nothing(
    node: Node, pg_cluster: PgCluster
) -> None:
    task = node.task()
    leases = [node.creds(task["token"], ttl="3s").json()["lease"] for _ in range(3)]
    with pg_cluster.stopped():
        _wait(lambda: all(node.lease(i)["state"] == "revoking" for i in leases))
        _wait(
            lambda: bool(
                httpx.get(f"{node.server.addr}/v1/alerts", headers=node.admin).json()["items"]
            )
        )
        alerts = httpx.get(f"{node.server.addr}/v1/alerts", headers=node.admin).json()["items"]
        assert {a["action"] for a in alerts} == {"alert.revocation_failed"}
    # Back up: every lease ends revoked (retries back off, so allow for the backoff).
    _wait(lambda: all(node.lease(i)["state"] == "revoked" for i in leases), limit=60)
    assert not _tether_roles(pg_cluster) & {node.lease(i).get("username", "") for i in leases}
    assert node.server.cli("audit", "verify").code == 0


def test_redis_task_end_kills_the_connection_and_refuses_new_logins(tmp_path: Path) -> None:
    import redis

    from tests.redis_server import redis_server

    doc = _estate()
    doc["profiles"].append(
        {
            "id": "cache-rw",
            "provider": "redis",
            "target": "sessions",
            "grants": {"keys": ["session:*"], "categories": ["+@read", "+@write"]},
            "max_ttl": "1h",
        }
    )
    doc["identities"][0]["entitlements"].append({"profile": "cache-rw"})
    with redis_server() as cache:
        server = Server(home=tmp_path / "home")
        server.start()
        try:
            init = server.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
            server.token = init["root_token"]
            assert server.cli("unseal", init["shares"][0]).code == 0
            added = server.cli(
                "target",
                "add",
                "sessions",
                "--kind",
                "redis",
                "--dsn-file",
                "-",
                stdin=cache.target.dsn,
            )
            assert added.code == 0, added.stderr
            assert server.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", doc))).code == 0
            node = Node(server, init["shares"][0], init["root_token"])
            task = node.task()
            issued = httpx.post(
                f"{server.addr}/v1/creds/cache-rw",
                json={},
                headers={"Authorization": f"Bearer {task['token']}"},
            )
            assert issued.status_code == 200, issued.text
            creds = issued.json()
            client = cache.client(creds["username"], creds["password"])
            client.set("session:42", "alive")
            assert client.get("session:42") == "alive"
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.get("billing:1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.flushall()

            ended = httpx.post(
                f"{server.addr}/v1/tasks/{task['id']}/end",
                headers={"Authorization": f"Bearer {task['token']}"},
            )
            assert ended.status_code == 200

            def connection_dead() -> bool:
                try:
                    client.get("session:42")
                except redis.exceptions.ConnectionError:
                    return True
                except redis.exceptions.AuthenticationError:
                    return True
                return False

            _wait(connection_dead)
            with pytest.raises(redis.exceptions.AuthenticationError):
                cache.client(creds["username"], creds["password"]).ping()
            _wait(lambda: node.lease(creds["lease"])["state"] == "revoked")
        finally:
            server.stop()


def test_tether_creds_from_the_cli(node: Node, pg_cluster: PgCluster) -> None:
    task = node.task()
    admin_token = node.server.token
    node.server.token = task["token"]  # a workload's CLI speaks with its task token
    try:
        got = node.server.cli("creds", "postgres", "payments-db-ro", "--json")
        assert got.code == 0, got.stderr
        creds = got.json()
        human = node.server.cli("creds", "postgres", "payments-db-ro")
        assert human.code == 0 and "username:" in human.stdout
    finally:
        node.server.token = admin_token
    with psycopg.connect(pg_cluster.dsn(creds["username"], creds["password"])) as db:
        assert db.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)
    assert creds["dsn"].startswith("postgresql://") and creds["password"] not in creds["dsn"]
    listed = node.server.cli("lease", "list", "--task", task["id"], "--json").json()
    assert creds["lease"] in {x["id"] for x in listed}


def test_renewal_moves_valid_until_after_a_fresh_decision(
    node: Node, pg_cluster: PgCluster
) -> None:
    task = node.task()
    creds = node.creds(task["token"], ttl="1m").json()

    def valid_until() -> Any:
        with pg_cluster.superuser() as db:
            row = db.execute(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (creds["username"],)
            ).fetchone()
        assert row is not None
        return row[0]

    before = valid_until()
    renewed = httpx.post(
        f"{node.server.addr}/v1/leases/{creds['lease']}/renew",
        json={"ttl": "30m"},
        headers={"Authorization": f"Bearer {task['token']}"},
    )
    assert renewed.status_code == 200, renewed.text
    assert valid_until() > before
    assert node.lease(creds["lease"])["expires_at"] == renewed.json()["expires_at"]


def test_a_leaked_target_password_is_tied_to_its_lease_and_its_session_killed(
    node: Node, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    task = node.task()
    creds = node.creds(task["token"]).json()
    dsn = pg_cluster.dsn(creds["username"], creds["password"])
    session = psycopg.connect(dsn, connect_timeout=5)
    leaked = tmp_path / "settings.env"
    leaked.write_text(f"DATABASE_URL={dsn}\n")

    scanned = node.server.cli("scan", str(leaked), "--format", "json")
    assert scanned.code == 1, scanned.stderr
    assert creds["password"] not in scanned.stdout + scanned.stderr
    [finding] = scanned.json()["findings"]
    assert finding["rule"] == "database-url"
    assert finding["managed"] == {
        "identity": "reporting",
        "owner": "team-payments",
        "lease": creds["lease"],
        "valid": True,
    }
    assert finding["action"] == "revoked"

    _wait(lambda: _dead(session))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)
    _wait(lambda: node.lease(creds["lease"])["state"] == "revoked")
