"""Kill -9 during a stream of issuances loses no lease (invariant 1, design §7).

A real `tether serve` process issues opaque tokens to a workload as fast as four client
threads can ask; it is SIGKILLed mid-stream and restarted on the same database. Every
credential a client received must have its lease, nothing may be left `pending`, and
the short-lived ones end by themselves once the restarted node's worker runs.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.attest.oidc_issuer import OidcIssuer
from tests.scenario.harness import Server
from tests.scenario.test_core_loop import ACCESS, EXCHANGE, estate


def _unseal(server: Server, share: str) -> None:
    assert server.cli("unseal", share, "--json").json()["sealed"] is False


def test_sigkill_during_issuance_loses_no_lease(tmp_path: Path) -> None:
    with OidcIssuer(key_types=("RSA",)) as idp:
        server = Server(home=tmp_path / "home")
        server.start()
        try:
            init = server.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
            server.token = init["root_token"]
            _unseal(server, init["shares"][0])
            admin = {"Authorization": f"Bearer {init['root_token']}"}
            doc = estate(idp)
            assert httpx.post(f"{server.addr}/v1/estate/apply", json=doc, headers=admin).is_success
            task = httpx.post(
                f"{server.addr}/v1/tasks",
                json={"name": "stream", "ttl": "1h"},
                headers={"Authorization": f"Bearer {idp.github_actions_token()}"},
            ).json()

            received: list[dict[str, Any]] = []
            stop = threading.Event()

            def issue() -> None:
                with httpx.Client(base_url=server.addr, timeout=5) as http:
                    while not stop.is_set():
                        try:
                            response = http.post(
                                "/oauth2/token",
                                data={
                                    "grant_type": EXCHANGE,
                                    "subject_token": task["token"],
                                    "subject_token_type": ACCESS,
                                    "audience": "opaque-api",
                                    "ttl": "3s",
                                },
                            )
                        except httpx.HTTPError:
                            return  # the server is gone
                        if response.status_code == 200:
                            received.append(response.json())

            threads = [threading.Thread(target=issue) for _ in range(4)]
            for thread in threads:
                thread.start()
            while len(received) < 50:
                time.sleep(0.01)
            assert server.process is not None
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            stop.set()
            for thread in threads:
                thread.join()

            server.start()
            _unseal(server, init["shares"][0])
            leases = {}
            for body in received:
                lease = httpx.get(f"{server.addr}/v1/leases/{body['tether_lease']}", headers=admin)
                assert lease.status_code == 200, "a credential was handed out without its lease"
                leases[body["tether_lease"]] = lease.json()
            all_leases = httpx.get(
                f"{server.addr}/v1/leases", headers=admin, params={"limit": 10000}
            ).json()["items"]
            assert not [x for x in all_leases if x["state"] == "pending"]

            # Every 3-second credential ends on its own after the restart.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = {
                    httpx.get(f"{server.addr}/v1/leases/{i}", headers=admin).json()["state"]
                    for i in leases
                }
                if states <= {"expired", "revoked"}:
                    break
                time.sleep(0.25)
            assert states <= {"expired", "revoked"}, states
            sample = received[-1]["access_token"]
            introspected = httpx.post(
                f"{server.addr}/oauth2/introspect", data={"token": sample}, headers=admin
            ).json()
            assert introspected == {"active": False}
            verify = httpx.get(f"{server.addr}/v1/audit/verify", headers=admin).json()
            assert verify["ok"], verify
        finally:
            server.stop()
