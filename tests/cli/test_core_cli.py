"""The core loop's CLI against a real server: join token → task → lease list → end → kill switch."""

from __future__ import annotations

from pathlib import Path

from tests.cli.running import issue_token
from tests.factories import write_estate
from tests.scenario.harness import Server


def _estate() -> dict[str, object]:
    return {
        "version": 1,
        "owners": [{"id": "ops", "contact": "ops@example.com"}],
        "profiles": [{"id": "push", "provider": "token", "scopes": ["push"], "max_ttl": "1h"}],
        "identities": [
            {
                "id": "batch-host",
                "kind": "service_account",
                "owner": "ops",
                "purpose": "Nightly batch on a VM",
                "justification": "OPS-1",
                "environment": "prod",
                "entitlements": [{"profile": "push"}],
            }
        ],
    }


def test_task_and_lease_commands(tmp_path: Path) -> None:
    server = Server(home=tmp_path / "home")
    server.start()
    try:
        init = server.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
        server.token = init["root_token"]
        assert server.cli("unseal", init["shares"][0]).code == 0
        assert (
            server.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", _estate()))).code == 0
        )

        join = server.cli("join-token", "create", "--identity", "batch-host", "--json").json()
        join_file = tmp_path / "join"
        join_file.write_text(join["token"])
        started = server.cli(
            "task", "start", "nightly", "--attestation-file", str(join_file), "--json"
        )
        assert started.code == 0, started.stderr
        task = started.json()
        reused = server.cli("task", "start", "again", "--attestation-file", str(join_file))
        assert reused.code == 1 and "used" in reused.stderr  # a join token works once

        issued = {"tether_lease": issue_token(server, task)}
        leases = server.cli("lease", "list", "--task", task["id"], "--json").json()
        assert {x["id"] for x in leases} >= {issued["tether_lease"]}
        shown = server.cli("lease", "show", issued["tether_lease"], "--json").json()
        assert shown["state"] == "active" and shown["identity"] == "batch-host"
        assert "nightly" in server.cli("task", "list").stdout

        ended = server.cli("task", "end", task["id"], "--json").json()
        assert ended["status"] == "ended" and ended["leases_revoked"] == 2
        after = server.cli("lease", "show", issued["tether_lease"], "--json").json()
        assert after["state"] == "revoked" and after["end_reason"] == "task ended"

        join2 = server.cli("join-token", "create", "--identity", "batch-host", "--json").json()
        join_file.write_text(join2["token"])
        second = server.cli(
            "task", "start", "n2", "--attestation-file", str(join_file), "--json"
        ).json()
        killed = server.cli("lease", "revoke", "--all", "--reason", "incident 7", "--json").json()
        assert killed["revoked"] >= 1
        live = server.cli("lease", "list", "--state", "active", "--json").json()
        assert live == []
        assert server.cli("lease", "revoke", "--json").code == 1  # nothing named: refused
        assert second["id"].startswith("tsk_")
        assert server.cli("audit", "verify").code == 0
    finally:
        server.stop()
