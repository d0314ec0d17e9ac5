"""Governance flows end to end (issue #10): an owner departs and, under `suspend`, the
live PostgreSQL session of its identity dies; an exception hides a finding until it
expires; the evidence report's numbers are recomputed from the exported audit log; a
review campaign runs through the CLI with an owner token."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from tests.factories import write_estate
from tests.govern.world import AdminApi, admin_api
from tests.pg_cluster import PgCluster
from tests.scenario.harness import Server
from tether._internal.timeutil import format_time, parse_time

pytestmark = pytest.mark.service

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
API = "https://api.example.com"


def _estate(clock_now: dt.datetime, **governance: Any) -> dict[str, Any]:
    far = format_time(clock_now + dt.timedelta(days=300))
    return {
        "version": 1,
        "owners": [
            {"id": "team-a", "contact": "a@example.com"},
            {"id": "team-b", "contact": "b@example.com"},
        ],
        "profiles": [
            {
                "id": "api-read",
                "provider": "jwt",
                "audience": API,
                "scopes": ["read", "list"],
                "max_ttl": "15m",
            },
            {
                "id": "orders-api",
                "provider": "jwt",
                "audience": "https://orders.example.com",
                "max_ttl": "15m",
            },
            {
                "id": "app-db-ro",
                "provider": "postgres",
                "target": "app-db",
                "max_ttl": "1h",
                "grants": {"schema": "payments", "privileges": ["SELECT"]},
            },
        ],
        "identities": [
            {
                "id": identity_id,
                "kind": "service_account",
                "owner": owner,
                "purpose": "Reads payments",
                "justification": "CHG-7",
                "environment": "prod",
                "approval": {"by": "dana@example.com", "expires": far},
                "entitlements": entitlements,
            }
            for identity_id, owner, entitlements in (
                ("reporting", "team-a", [{"profile": "app-db-ro"}, {"profile": "api-read"}]),
                ("billing", "team-b", [{"profile": "api-read"}, {"profile": "orders-api"}]),
            )
        ],
        **({"governance": governance} if governance else {}),
    }


class World(AdminApi):
    def creds(self, identity_id: str) -> dict[str, Any]:
        response = self.client.post(
            "/v1/creds/app-db-ro",
            json={},
            headers={"Authorization": f"Bearer {self.task(identity_id)['token']}"},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def audit(self) -> list[dict[str, Any]]:
        response = self.client.get("/v1/audit/export", headers=self.admin)
        assert response.is_success, response.text
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with admin_api(tmp_path) as parts:
        yield World(*parts)


def _dead(session: psycopg.Connection[Any]) -> bool:
    try:
        session.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_a_departed_owner_orphans_its_identity_and_suspend_kills_the_session(
    world: World, pg_cluster: PgCluster
) -> None:
    world.post("/v1/targets", {"name": "app-db", "kind": "postgres", "dsn": pg_cluster.admin_dsn})
    governance = {"orphaned": {"action": "suspend", "grace": "0s"}}
    document = _estate(world.clock.now, **governance)
    world.post("/v1/estate/apply", document)
    creds = world.creds("reporting")
    session = psycopg.connect(pg_cluster.dsn(creds["username"], creds["password"]))
    assert session.execute("SELECT count(*) FROM payments.accounts").fetchone() == (3,)

    document["owners"][0].update(status="departed", left=format_time(world.clock.now))
    world.post("/v1/estate/apply", document)
    world.node.govern.evaluate_now()
    [orphaned] = world.get("/v1/findings", rule="orphaned")["items"]
    assert orphaned["identity"] == "reporting" and orphaned["state"] == "open"
    assert orphaned["owasp_nhi"] == ["NHI1"] and orphaned["evidence"]["action"] == "suspend"
    world.node.sweep()
    world.node.sweep()
    assert _dead(session)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_cluster.dsn(creds["username"], creds["password"]), connect_timeout=5)
    # Issuance is refused too, with the reason.
    refused = world.client.post(
        "/v1/creds/app-db-ro",
        json={},
        headers={"Authorization": f"Bearer {world.task('billing')['token']}"},
    )
    assert refused.status_code in (400, 403)

    entries = world.audit()
    change = next(
        e
        for e in entries
        if e["action"] == "estate.update" and json.loads(e["details"])["id"] == "team-a"
    )
    revoke = next(
        e
        for e in entries
        if e["action"] == "lease.revoke" and json.loads(e["details"])["lease_id"] == creds["lease"]
    )
    confirmed = next(
        e
        for e in entries
        if e["action"] == "lease.revoke.confirmed"
        and json.loads(e["details"])["lease_id"] == creds["lease"]
    )
    finding = next(
        e
        for e in entries
        if e["action"] == "finding.open" and json.loads(e["details"])["rule"] == "orphaned"
    )
    assert change["seq"] < revoke["seq"] < confirmed["seq"]
    assert change["seq"] < finding["seq"]
    assert "departed" in revoke["reason"]
    assert json.loads(revoke["details"])["trigger"]["kind"] == "owner_departed"
    assert json.loads(change["details"])["fields"] == ["left", "status"]


def test_an_exception_hides_its_finding_until_it_expires_then_it_reopens(world: World) -> None:
    clock = world.clock
    document = _estate(clock.now)
    document["identities"][1]["criticality"] = "high"
    del document["identities"][1]["approval"]  # metadata-missing on billing
    document["exceptions"] = [
        {
            "id": "EXC-7",
            "rule": "metadata-missing",
            "identity": "billing",
            "compensating_control": "approval tracked in the change ticket",
            "requested_by": "ana@example.com",
            "approved_by": "dana@example.com",
            "expires": format_time(clock.now + dt.timedelta(days=2)),
        }
    ]
    world.post("/v1/estate/apply", document)
    world.node.govern.evaluate_now()
    [waived] = world.get("/v1/findings", rule="metadata-missing")["items"]
    assert waived["state"] == "excepted" and waived["exception"]["id"] == "EXC-7"
    assert world.get("/v1/findings", rule="metadata-missing", state="open")["items"] == []
    assert world.get("/v1/identities/billing")["risk"]["score"] == 0

    clock.advance(days=3)
    world.node.govern.evaluate_now()
    [reopened] = world.get("/v1/findings", rule="metadata-missing")["items"]
    assert reopened["state"] == "open" and reopened["id"] == waived["id"]
    assert world.get("/v1/identities/billing")["risk"]["score"] > 0
    actions = [
        e["action"]
        for e in world.audit()
        if e["action"].startswith("finding.")
        and json.loads(e["details"])["rule"] == "metadata-missing"
    ]
    assert actions == ["finding.excepted", "finding.reopen"]

    # Through the API: requested by one principal, approved by another, never the same.
    owner = world.post("/v1/tokens", {"name": "team-b", "roles": ["owner:team-b"]})["token"]
    asked = world.client.post(
        "/v1/exceptions",
        json={
            "rule": "metadata-missing",
            "identity": "billing",
            "compensating_control": "ticket",
            "expires": format_time(clock.now + dt.timedelta(days=1)),
        },
        headers={"Authorization": f"Bearer {owner}"},
    )
    assert asked.status_code == 201, asked.text
    selfish = world.client.post(
        f"/v1/exceptions/{asked.json()['id']}/approve", headers={"Authorization": f"Bearer {owner}"}
    )
    assert selfish.status_code == 403  # an owner token may not approve at all
    world.post(f"/v1/exceptions/{asked.json()['id']}/approve")
    world.node.govern.evaluate_now()
    [again] = world.get("/v1/findings", rule="metadata-missing")["items"]
    assert again["state"] == "excepted" and again["exception"]["id"] == asked.json()["id"]
    bad = world.client.post(
        "/v1/exceptions",
        headers=world.admin,
        json={
            "rule": "nope",
            "identity": "billing",
            "compensating_control": "x",
            "expires": "2099-01-01",
        },
    )
    assert bad.status_code == 422 and "rule" in bad.text


def _recompute(entries: list[dict[str, Any]], since: dt.datetime) -> dict[str, Any]:
    """The report's numbers from the exported audit log alone."""
    state: dict[str, tuple[str, str]] = {}
    for entry in entries:
        if entry["action"].startswith("finding."):
            details = json.loads(entry["details"])
            state[details["finding"]] = (
                details["rule"],
                {
                    "finding.open": "open",
                    "finding.reopen": "open",
                    "finding.excepted": "excepted",
                    "finding.resolve": "resolved",
                }[entry["action"]],
            )
    by_rule: dict[str, dict[str, int]] = {}
    for rule, current in state.values():
        row = by_rule.setdefault(rule, {"open": 0, "excepted": 0, "resolved": 0})
        row[current] += 1
    recent = [e for e in entries if parse_time(e["ts"]) >= since]
    issued = sum(
        1
        for e in recent
        if e["action"] in ("token.exchange", "credential.issue")
        and e["result"] == "allow"
        and json.loads(e["details"]).get("lease_id")
    )
    revoked = sum(1 for e in recent if e["action"] == "lease.revoke")
    expired = sum(1 for e in recent if e["action"] == "lease.expire")
    samples: dict[str, list[float]] = {}
    bounded = {
        json.loads(e["details"])["lease_id"]: json.loads(e["details"])["bounded_by"]
        for e in entries
        if e["action"] in ("token.exchange", "credential.issue")
        and e["result"] == "allow"
        and json.loads(e["details"]).get("bounded_by") == "approval expiry"
    }
    for entry in recent:
        details = json.loads(entry["details"])
        if entry["action"] == "lease.expire" and details["lease_id"] in bounded:
            late = (parse_time(entry["ts"]) - parse_time(details["expires_at"])).total_seconds()
            samples.setdefault("approval_expiry", []).append(max(0.0, late))
    confirmed = {
        json.loads(e["details"])["lease_id"]: parse_time(e["ts"])
        for e in entries
        if e["action"] == "lease.revoke.confirmed"
    }
    for entry in recent:
        details = json.loads(entry["details"])
        trigger = details.get("trigger") if entry["action"] == "lease.revoke" else None
        if not trigger or "at" not in trigger:
            continue
        dead = parse_time(entry["ts"])
        if entry["result"] == "pending":
            dead = confirmed[details["lease_id"]]
        samples.setdefault(trigger["kind"], []).append(
            max(0.0, (dead - parse_time(trigger["at"])).total_seconds())
        )
    decided = sum(1 for e in recent if e["action"] == "review.decide")
    return {
        "by_rule": by_rule,
        "issued": issued,
        "revoked": revoked,
        "expired": expired,
        "samples": samples,
        "decided": decided,
    }


def test_the_json_report_is_recomputed_from_the_audit_export(world: World) -> None:
    clock = world.clock
    since = clock.now - dt.timedelta(minutes=1)
    document = _estate(clock.now)
    document["identities"][1]["approval"]["expires"] = format_time(
        clock.now + dt.timedelta(minutes=10)
    )
    world.post("/v1/estate/apply", document)

    def exchange(identity_id: str) -> str:
        task = world.task(identity_id)
        response = world.client.post(
            "/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": task["token"],
                "subject_token_type": ACCESS,
                "audience": API,
            },
        )
        assert response.status_code == 200, response.text
        return str(task["id"])

    first = exchange("reporting")
    exchange("reporting")
    exchange("billing")
    clock.advance(seconds=3)
    world.post(f"/v1/tasks/{first}/end")  # task end
    clock.advance(minutes=11)  # billing's approval expires
    world.node.sweep()
    world.node.govern.evaluate_now()  # approval-expired opens
    campaign = world.post("/v1/reviews", {"owner": "team-a"})
    item = world.get(f"/v1/reviews/{campaign['id']}")["entries"][0]
    world.post(f"/v1/reviews/items/{item['id']}/decide", {"decision": "keep"})
    world.post("/v1/leases/revoke", {"all": True, "reason": "drill"})  # kill switch

    report = world.get("/v1/reports/evidence", since=format_time(since))
    again = _recompute(world.audit(), since)
    assert {
        r["rule"]: {k: r[k] for k in ("open", "excepted", "resolved")}
        for r in report["findings"]["by_rule"]
    } == again["by_rule"]
    assert "approval-expired" in again["by_rule"]
    assert report["leases"]["issued"] == again["issued"] == 3
    assert report["leases"]["revoked"] == again["revoked"]
    assert report["leases"]["expired"] == again["expired"]
    assert report["reviews"]["decided"] == again["decided"] == 1
    for kind in ("task_end", "approval_expiry", "kill_switch"):
        got = report["trigger_to_dead"][kind]
        seconds = again["samples"][kind]
        assert got["count"] == len(seconds) > 0, kind
        assert got["median_s"] == round(statistics.median(seconds), 3), kind
        assert got["max_s"] == round(max(seconds), 3), kind
        assert got["audit_entries"], kind
    # The approval expired a minute before the sweep that ended its credentials.
    assert report["trigger_to_dead"]["approval_expiry"]["max_s"] >= 60
    assert set(report) >= {
        "coverage",
        "findings",
        "reviews",
        "exceptions",
        "leases",
        "trigger_to_dead",
    }
    assert report["coverage"]["fields"]["approval"]["count"] == 1
    html = world.client.get("/v1/reports/evidence", params={"format": "html"}, headers=world.admin)
    assert html.status_code == 200 and "<svg" in html.text
    assert "http://" not in html.text.replace("http://www.w3.org/2000/svg", "")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    node = Server(home=tmp_path / "home")
    node.start()
    init = node.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
    node.token = init["root_token"]
    assert node.cli("unseal", init["shares"][0]).code == 0
    yield node
    node.stop()


def test_a_review_campaign_runs_through_the_cli_with_an_owner_token(
    server: Server, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    path = write_estate(tmp_path / "estate.yaml", _estate(now))
    assert server.cli("apply", "-f", str(path)).code == 0
    admin = server.token
    headers = {"Authorization": f"Bearer {admin}"}
    owner = httpx.post(
        f"{server.addr}/v1/tokens",
        headers=headers,
        json={"name": "team-b", "roles": ["owner:team-b"]},
    ).json()["token"]

    def token_for_billing() -> httpx.Response:
        join = httpx.post(
            f"{server.addr}/v1/join-tokens", headers=headers, json={"identity": "billing"}
        ).json()["token"]
        task = httpx.post(
            f"{server.addr}/v1/tasks",
            json={"name": "run"},
            headers={"Authorization": f"Bearer {join}"},
        ).json()
        return httpx.post(
            f"{server.addr}/oauth2/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": task["token"],
                "subject_token_type": ACCESS,
                "audience": "https://orders.example.com",
            },
        )

    live = token_for_billing()
    assert live.status_code == 200, live.text
    started = server.cli("review", "start", "--owner", "team-b", "--json")
    assert started.code == 0, started.stderr
    campaign = started.json()
    assert campaign["items"] == 2

    server.token = owner  # the owner reviews its own identities
    shown = server.cli("review", "show", campaign["id"], "--json")
    assert shown.code == 0, shown.stderr
    entries = {e["profile"]: e for e in shown.json()["entries"]}
    # Used once (the live token) and never: the evidence each item carries.
    assert entries["orders-api"]["recommendation"] == "keep"
    assert entries["orders-api"]["usage"]["count"] >= 1
    assert entries["api-read"]["recommendation"] == "revoke"
    decided = server.cli(
        "review", "decide", entries["orders-api"]["id"], "revoke", "--reason", "unused", "--json"
    )
    assert decided.code == 0, decided.stderr
    assert server.cli("review", "decide", entries["api-read"]["id"], "keep").code == 0
    exported = tmp_path / "agreed.yaml"
    export = server.cli("review", "export", campaign["id"], "-f", str(path), "-o", str(exported))
    assert export.code == 0, export.stderr
    server.token = admin

    introspected = httpx.post(
        f"{server.addr}/oauth2/introspect",
        headers=headers,
        data={"token": live.json()["access_token"]},
    ).json()
    assert introspected == {"active": False}
    refused = token_for_billing()
    assert refused.status_code in (400, 403) and "not entitled" in refused.text
    # The old file still grants it: the plan says so, and nothing is re-granted.
    stale = server.cli("apply", "-f", str(path), "--dry-run")
    assert stale.code == 0 and "withdrawn" in stale.stdout and "orders-api" in stale.stdout
    agreed = yaml.safe_load(exported.read_text())
    billing = next(i for i in agreed["identities"] if i["id"] == "billing")
    assert [e["profile"] for e in billing["entitlements"]] == ["api-read"]
    assert server.cli("apply", "-f", str(exported)).code == 0
    again = server.cli("apply", "-f", str(exported), "--dry-run")
    assert again.code == 0 and "No changes" in again.stdout, again.stdout
    assert token_for_billing().status_code in (400, 403)
    listed = server.cli("review", "list", "--json").json()
    assert listed[0]["state"] == "completed"

    # The rest of the governance CLI, as a script would use it.
    usage = tmp_path / "usage.jsonl"
    usage.write_text(
        json.dumps(
            {
                "identity": "reporting",
                "at": format_time(now),
                "source": "10.0.0.9",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            }
        )
        + "\n"
    )
    fed = server.cli("usage", "-f", str(usage))
    assert fed.code == 0 and fed.json() == {"accepted": 1, "rejected": []}, fed.stdout
    found = server.cli("findings", "--refresh", "--rule", "human-use", "--json")
    assert found.code == 0, found.stderr
    assert [(f["identity"], f["owasp_nhi"]) for f in found.json()] == [("reporting", ["NHI10"])]
    finding = found.json()[0]["id"]
    assigned = server.cli("findings", "assign", finding, "dana@example.com", "--json")
    assert assigned.code == 0, assigned.stderr
    assert assigned.json()["assignee"]["to"] == "dana@example.com"
    queue = server.cli("findings", "--assignee", "dana@example.com", "--json").json()
    assert [f["id"] for f in queue] == [finding]
    assert server.cli("findings", "--assignee", "nobody@example.com", "--json").json() == []
    report = server.cli("report", "--framework", "nist-csf", "--format", "json")
    assert report.code == 0, report.stderr
    assert report.json()["findings"]["by_control"].get("DE.CM-03") == 1
    html = tmp_path / "evidence.html"
    assert server.cli("report", "--format", "html", "-o", str(html)).code == 0
    assert "<svg" in html.read_text()
    ranked = server.cli("identity", "list", "--sort", "risk", "--json").json()
    assert ranked[0]["id"] == "reporting" and ranked[0]["risk"] > 0
    migration = server.cli("report", "migration", "--json")
    assert migration.code == 0 and migration.json() == []
