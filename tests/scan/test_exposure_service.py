"""POST /v1/exposures on a node in-process: every kind of managed credential it ties a
secret to and ends, shadow NHIs and their alerts, the evidence report, and who may ask."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document
from tests.govern.world import AdminApi, admin_api
from tests.scan.fakes import fake

IDENTITY = "nhi-00000"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AdminApi]:
    with admin_api(tmp_path) as (node, client, root, clock):
        api = AdminApi(node, client, root, clock)
        document = estate_document(2)
        document["governance"] = {
            "sinks": [{"id": "file", "kind": "jsonl", "path": str(tmp_path / "alerts.jsonl")}]
        }
        api.post("/v1/estate/apply", document)
        yield api


def _report(api: AdminApi, secret: str, token: str | None = None, **body: Any) -> Any:
    payload = {"secrets": [{"secret": secret, "location": {"file": "leak.txt", "line": 3}}]}
    return api.call("POST", "/v1/exposures", token, json={**payload, **body})


def test_an_api_token_and_a_join_token_are_revoked(world: AdminApi) -> None:
    api_token = world.token("auditor")
    join = world.post("/v1/join-tokens", {"identity": IDENTITY})["token"]
    for secret, credential in ((api_token, "api-token:"), (join, "join-token:")):
        response = _report(world, secret)
        assert response.status_code == 200, response.text
        [finding] = response.json()["findings"]
        assert finding["managed"]["credential"].startswith(credential)
        assert finding["managed"]["valid"] is True and finding["action"] == "revoked"
    assert world.call("GET", "/v1/findings", api_token).status_code == 401
    used = world.client.post(
        "/v1/tasks", json={"name": "run"}, headers={"Authorization": f"Bearer {join}"}
    )
    assert used.status_code in (400, 401), used.text
    # Found again: recognised, no longer valid, nothing more done.
    [again] = _report(world, api_token).json()["findings"]
    assert again["managed"]["valid"] is False and again["action"] is None


def test_a_revoked_lease_feeds_the_evidence_reports_exposure_time(world: AdminApi) -> None:
    task = world.task(IDENTITY)
    [finding] = _report(world, task["token"]).json()["findings"]
    assert finding["action"] == "revoked"
    report = world.get("/v1/reports/evidence", framework="owasp-nhi")
    exposure = report["trigger_to_dead"]["exposure"]
    assert exposure["count"] >= 1, exposure


def test_an_unmanaged_github_token_is_a_shadow_nhi_alerted_and_resolved_once_managed(
    world: AdminApi, tmp_path: Path
) -> None:
    leaked = fake("github-token")
    [finding] = _report(world, leaked).json()["findings"]
    assert "managed" not in finding and finding["rule"] == "github-token"
    [shadow] = world.get("/v1/findings", rule="shadow-nhi")["items"]
    assert shadow["state"] == "open" and shadow["evidence"]["provider"] == "github"
    assert shadow["evidence"]["fingerprint"] == finding["fingerprint"]
    assert leaked not in json.dumps(shadow)
    world.node.alerts.deliver_due()
    delivered = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert any(a["rule"] == "shadow-nhi" for a in delivered)
    assert leaked not in (tmp_path / "alerts.jsonl").read_text()

    # Brought under management (vaulted as a static secret), the next report matches it.
    world.post(
        "/v1/credentials",
        {"id": "gh-ci", "owner": "team-a", "readers": [IDENTITY], "value": leaked},
    )
    [matched] = _report(world, leaked).json()["findings"]
    assert matched["managed"]["credential"] == "gh-ci@v1" and matched["action"] == "rotated"
    [resolved] = world.get("/v1/findings", rule="shadow-nhi")["items"]
    assert resolved["state"] == "resolved"


def test_a_label_does_not_make_a_shadow(world: AdminApi) -> None:
    """The server reads the secret itself: a reporter's label cannot raise findings."""
    response = _report(world, "not-a-token-" + secrets.token_hex(8))
    assert response.status_code == 200
    body = {"secrets": [{"rule": "github-token", "secret": "x" * 40, "location": {"file": "a"}}]}
    assert world.call("POST", "/v1/exposures", json=body).status_code == 200
    assert world.get("/v1/findings", rule="shadow-nhi")["items"] == []


def test_an_exposure_token_reports_but_may_not_dry_run(world: AdminApi) -> None:
    reporter = world.token("exposure")
    assert world.call("GET", "/v1/exposures/key", reporter).status_code == 200
    task = world.task(IDENTITY)
    dry = _report(world, task["token"], reporter, respond=False)
    assert dry.status_code == 403, dry.text
    real = _report(world, task["token"], reporter)
    assert real.status_code == 200 and real.json()["findings"][0]["action"] == "revoked"
    # Every report is in the audit trail, matched or not.
    entries = world.get("/v1/audit", limit=10000)["items"]
    reports = [e for e in entries if e["action"] == "exposure.report"]
    assert reports and all(e["actor"].startswith("token:") for e in reports)


def test_bad_reports_are_refused_without_echoing_the_secret(world: AdminApi) -> None:
    secret = "s" * 70000
    response = _report(world, secret)
    assert response.status_code == 422 and "secrets[0].secret" in response.text
    assert "sss" not in response.text
    body = {"secrets": [{"secret": "abc", "location": {"file": "a", "line": -1}}]}
    refused = world.call("POST", "/v1/exposures", json=body)
    assert refused.status_code == 422 and "location.line" in refused.text
    partner = world.client.post(
        "/v1/exposures", content=b"[]", headers={"Github-Public-Key-Signature": "x"}
    )
    assert partner.status_code == 401, partner.text  # no keys configured: not a way in
