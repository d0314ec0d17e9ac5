"""Two `tether serve` nodes on one PostgreSQL database behave as one Tether (issue #9).

- A revocation made on node A is refused on node B within 1 s, by introspection and by
  token exchange; an estate applied on A is in force on B within 1 s.
- Under a stream of issuances of real PostgreSQL roles, the node running the background
  work is SIGKILLed; the other takes it over. Afterwards every credential a client
  received has its lease, every lease ended and its role was dropped exactly once at the
  target (the target logs its DDL: the DROP ROLEs are counted), and no alert was raised
  twice.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.attest.oidc_issuer import OidcIssuer
from tests.cluster._wait import BOUND, within
from tests.factories import write_estate
from tests.pg_cluster import PgCluster
from tests.scenario.harness import Server
from tests.scenario.test_core_loop import ACCESS, EXCHANGE, estate
from tests.scenario.test_target_credentials import _estate as target_estate
from tests.services import throwaway_postgres_database

pytestmark = pytest.mark.service

#: Both nodes sign as the one Tether behind the load balancer.
PUBLIC_URL = "http://tether.cluster.test"


@dataclass
class Pair:
    a: Server
    b: Server
    share: str
    root: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.root}"}

    def leader(self) -> Server | None:
        """The node whose log says it took the background work (and none since)."""
        leading = [s for s in (self.a, self.b) if _leads(s)]
        return leading[0] if len(leading) == 1 else None


def _leads(server: Server) -> bool:
    took = gave = 0
    for line in server.log_file.read_text(errors="replace").splitlines():
        if "leading the background work" in line:
            took += 1
        elif "gave up the background work" in line:
            gave += 1
    return took > gave


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with throwaway_postgres_database() as url:
        env = {"TETHER_PUBLIC_URL": PUBLIC_URL, "TETHER_PENDING_GRACE": "2"}
        a = Server(home=tmp_path / "a", database_url=url, extra_env=dict(env))
        b = Server(home=tmp_path / "b", database_url=url, extra_env=dict(env))
        a.start()
        try:
            init = a.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
            share, root = init["shares"][0], init["root_token"]
            a.token = b.token = root
            assert a.cli("unseal", share).code == 0
            b.start()
            assert b.cli("unseal", share).code == 0
            yield Pair(a, b, share, root)
        finally:
            a.stop()
            b.stop()


# -- changes on one node in force on the other --


def test_a_revocation_on_a_is_refused_on_b_within_a_second(pair: Pair) -> None:
    with OidcIssuer(key_types=("RSA",)) as idp:
        doc = estate(idp)
        applied = httpx.post(f"{pair.a.addr}/v1/estate/apply", json=doc, headers=pair.admin)
        assert applied.is_success, applied.text
        within(lambda: _task(pair.b, idp).status_code == 201, limit=5)
        task = _task(pair.a, idp).json()

        def exchange(server: Server, audience: str) -> httpx.Response:
            return httpx.post(
                f"{server.addr}/oauth2/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": task["token"],
                    "subject_token_type": ACCESS,
                    "audience": audience,
                },
            )

        def active(server: Server, token: str) -> bool:
            body = httpx.post(
                f"{server.addr}/oauth2/introspect", data={"token": token}, headers=pair.admin
            ).json()
            return bool(body["active"])

        issued = exchange(pair.b, "https://orders.example.com")
        assert issued.status_code == 200, issued.text
        access = issued.json()["access_token"]
        assert active(pair.b, access) and active(pair.a, access)
        assert exchange(pair.b, "opaque-api").status_code == 200

        ended = httpx.post(
            f"{pair.a.addr}/v1/tasks/{task['id']}/end",
            headers={"Authorization": f"Bearer {task['token']}"},
        )
        assert ended.status_code == 200, ended.text
        within(lambda: not active(pair.b, access), limit=BOUND)
        within(lambda: exchange(pair.b, "opaque-api").status_code != 200, limit=BOUND)
        refused = exchange(pair.b, "https://orders.example.com")
        assert refused.status_code in (400, 401), refused.text


def test_an_estate_applied_on_a_is_in_force_on_b_within_a_second(pair: Pair) -> None:
    with OidcIssuer(key_types=("RSA",)) as idp:
        doc = estate(idp)
        assert httpx.post(f"{pair.a.addr}/v1/estate/apply", json=doc, headers=pair.admin)
        within(lambda: _task(pair.b, idp).status_code == 201, limit=5)
        task = _task(pair.b, idp).json()

        def billing() -> int:
            return httpx.post(
                f"{pair.b.addr}/oauth2/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": task["token"],
                    "subject_token_type": ACCESS,
                    "audience": "https://billing.example.com",
                },
            ).status_code

        assert billing() != 200  # not entitled yet
        for identity in doc["identities"]:
            if identity["id"] == "payments-deployer":
                identity["entitlements"].append({"profile": "billing-api"})
        applied = httpx.post(f"{pair.a.addr}/v1/estate/apply", json=doc, headers=pair.admin)
        assert applied.is_success, applied.text
        within(lambda: billing() == 200, limit=BOUND)


def _task(server: Server, idp: OidcIssuer) -> httpx.Response:
    return httpx.post(
        f"{server.addr}/v1/tasks",
        json={"name": "deploy", "ttl": "30m"},
        headers={"Authorization": f"Bearer {idp.github_actions_token()}"},
    )


# -- SIGKILL of the node running the background work --

_DROP = re.compile(r'statement: DROP ROLE "?(tether_[A-Za-z0-9_]+)"?')


class Stream:
    """Client threads asking both nodes for database credentials until told to stop;
    a node that is gone is skipped (as a load balancer would)."""

    def __init__(self, pair: Pair, task_token: str, threads: int = 4) -> None:
        self._nodes = [pair.a, pair.b]
        self._token = task_token
        self.received: list[dict[str, Any]] = []
        self.ttl = "3s"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def _run(self, index: int) -> None:
        turn = index
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                server = self._nodes[turn % 2]
                turn += 1
                if server.process is None or server.process.poll() is not None:
                    continue
                try:
                    response = http.post(
                        f"{server.addr}/v1/creds/payments-db-ro",
                        json={"ttl": self.ttl},
                        headers={"Authorization": f"Bearer {self._token}"},
                    )
                except httpx.HTTPError:
                    continue  # the node died mid-request: that issuance is not received
                if response.status_code == 200:
                    with self._lock:
                        self.received.append(response.json())


def _drops(log: Path, offset: int) -> collections.Counter[str]:
    text = log.read_bytes()[offset:].decode(errors="replace")
    return collections.Counter(m.group(1) for m in _DROP.finditer(text))


def test_sigkill_of_the_leader_under_issuance_loses_nothing_and_repeats_nothing(
    pair: Pair, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    target_log = pg_cluster.data_dir.parent / "server.log"
    with pg_cluster.superuser() as su:
        su.execute("ALTER SYSTEM SET log_statement = 'ddl'")
        su.execute("SELECT pg_reload_conf()")
    try:
        _sigkill_scenario(pair, pg_cluster, target_log, tmp_path)
    finally:
        with pg_cluster.superuser() as su:
            su.execute("ALTER SYSTEM RESET log_statement")
            su.execute("SELECT pg_reload_conf()")


def _sigkill_scenario(pair: Pair, cluster: PgCluster, target_log: Path, tmp_path: Path) -> None:
    a = pair.a
    added = a.cli(
        "target", "add", "payments-db", "--kind", "postgres", "--dsn-file", "-",
        stdin=cluster.admin_dsn,
    )  # fmt: skip
    assert added.code == 0, added.stderr
    assert a.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", target_estate()))).code == 0
    join = httpx.post(
        f"{a.addr}/v1/join-tokens", headers=pair.admin, json={"identity": "reporting"}
    ).json()["token"]
    task = httpx.post(
        f"{a.addr}/v1/tasks", json={"name": "stream"}, headers={"Authorization": f"Bearer {join}"}
    ).json()
    within(lambda: pair.leader() is not None, limit=15)
    leader = pair.leader()
    assert leader is not None
    survivor = pair.b if leader is pair.a else pair.a
    offset = target_log.stat().st_size

    # Both nodes issue; the leader alone expires and revokes (3-second credentials).
    stream = Stream(pair, task["token"])
    stream.start()
    try:
        within(lambda: stream.count() >= 30, limit=60)
        # Then longer credentials, so that the kill lands between revocations (a DROP
        # ROLE cut off mid-transaction is logged, yet rolled back: it would count twice).
        stream.ttl = "15s"
        short = stream.count()
        within(
            lambda: _settled(survivor, pair, stream.received[:short]),
            limit=60,
            explain=lambda: _alert_reasons(survivor, pair),
        )
        first = stream.count()
        within(lambda: stream.count() >= first + 10, limit=60)
        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        killed_at = stream.count()
        stream.ttl = "3s"
        # The survivor serves on, and takes the background work over.
        within(lambda: stream.count() >= killed_at + 10, limit=60)
    finally:
        stream.stop()
    within(lambda: _leads(survivor), limit=15)

    received = list(stream.received)
    # Every credential a client received has its lease, and every lease ended.
    leases = {r["lease"]: r for r in received}
    for lease_id in leases:
        assert httpx.get(f"{survivor.addr}/v1/leases/{lease_id}", headers=pair.admin).is_success
    within(
        lambda: _settled(survivor, pair, received, everything=True),
        limit=90,
        explain=lambda: _alert_reasons(survivor, pair),
    )
    ours = _all_leases(survivor, pair)
    assert not [x for x in ours if x["state"] in ("pending", "active", "revoking")]

    # Each received role was dropped exactly once; no role was dropped twice.
    drops = _drops(target_log, offset)
    usernames = {r["username"] for r in received}
    assert {name: drops[name] for name in usernames if drops[name] != 1} == {}
    assert [name for name, n in drops.items() if n > 1] == []
    with cluster.superuser() as su:
        left = {r[0] for r in su.execute("SELECT rolname FROM pg_roles")}
    assert not usernames & left

    # No alert raised twice (one per failed attempt of a lease at most).
    alerts = httpx.get(
        f"{survivor.addr}/v1/alerts", headers=pair.admin, params={"limit": 1000}
    ).json()["items"]
    details = [json.loads(x["details"]) for x in alerts]
    keys = [
        (x["action"], d.get("lease_id"), d.get("attempts"))
        for x, d in zip(alerts, details, strict=True)
    ]
    assert len(keys) == len(set(keys)), json.dumps(alerts)[:2000]
    print(f"{len(received)} credentials, {sum(drops.values())} DROP ROLEs, {len(alerts)} alerts")
    assert survivor.cli("audit", "verify").code == 0


def _all_leases(server: Server, pair: Pair) -> list[dict[str, Any]]:
    body = httpx.get(f"{server.addr}/v1/leases", headers=pair.admin, params={"limit": 10000})
    items: list[dict[str, Any]] = body.json()["items"]
    return [x for x in items if x["provider"] == "postgres"]


def _settled(
    server: Server, pair: Pair, received: list[dict[str, Any]], *, everything: bool = False
) -> bool:
    """Every lease of `received` has ended; with `everything`, no lease at all is still
    pending (an issuance the kill interrupted) or being revoked."""
    wanted = {r["lease"] for r in received}
    states = {x["id"]: x["state"] for x in _all_leases(server, pair)}
    if any(states.get(i, "?") in ("pending", "active", "revoking") for i in wanted):
        return False
    return not everything or not [s for s in states.values() if s in ("pending", "revoking")]


def _alert_reasons(server: Server, pair: Pair) -> str:
    alerts = httpx.get(f"{server.addr}/v1/alerts", headers=pair.admin, params={"limit": 1000})
    reasons = collections.Counter(str(x.get("reason")) for x in alerts.json()["items"])
    return f"alerts: {dict(reasons.most_common(5))}"
