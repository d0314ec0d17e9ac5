"""`tether scan` against a real server: a Tether token and a static secret committed to a
git repository's history are found, tied to their lease and credential, and ended."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cli.running import issue_token, running_server, task_token
from tests.scan.fakes import fake
from tests.scenario.harness import Server

READER = "mainframe-batch"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("scan")) as running:
        yield running


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _static(server: Server, tmp_path: Path, name: str) -> str:
    value = "v1-" + secrets.token_urlsafe(24)
    value_file = tmp_path / f"{name}.value"
    value_file.write_text(value)
    added = server.cli(
        "credential", "add", name, "--owner", "ops", "--reader", READER,
        "--overlap", "30m", "--value-file", str(value_file),
    )  # fmt: skip
    assert added.code == 0, added.stderr
    return value


def _introspect(server: Server, token: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.addr}/oauth2/introspect",
        data={"token": token},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _audit(server: Server, action: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.addr}/v1/audit",
        params={"limit": 10000},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert response.status_code == 200, response.text
    items = [item for item in response.json()["items"] if item["action"] == action]
    for item in items:
        if isinstance(item["details"], str):
            item["details"] = json.loads(item["details"])
    return items


def test_a_token_and_a_static_secret_in_git_history_are_found_and_ended(
    server: Server, tmp_path: Path
) -> None:
    task = task_token(server, "batch-host", tmp_path)
    lease_id = issue_token(server, task)
    value = _static(server, tmp_path, "mainframe")
    task_lease = _introspect(server, task["token"])["jti"]

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "deploy.sh").write_text(f"#!/bin/sh\nexport TETHER_TOKEN={task['token']}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "deploy script")
    (repo / "config.ini").write_text(f"[mainframe]\npassword = {value}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "config")
    # Both are removed later: history still holds them.
    (repo / "deploy.sh").write_text("#!/bin/sh\n")
    (repo / "config.ini").unlink()
    _git(repo, "commit", "-q", "-am", "remove secrets")

    scanned = server.cli("scan", "--git", str(repo), "--format", "json")
    assert scanned.code == 1, scanned.stderr
    assert task["token"] not in scanned.stdout and value not in scanned.stdout
    findings = {f["rule"]: f for f in scanned.json()["findings"]}

    token_finding = findings["tether-token"]
    assert token_finding["file"] == "deploy.sh" and token_finding["line"] == 2
    assert len(token_finding["commit"]) == 40
    assert token_finding["managed"]["identity"] == "batch-host"
    assert token_finding["managed"]["owner"] == "ops"
    assert token_finding["managed"]["lease"] == task_lease
    assert token_finding["managed"]["valid"] is True
    assert token_finding["action"] == "revoked"

    secret_finding = findings["generic-secret"]
    assert (secret_finding["file"], secret_finding["line"]) == ("config.ini", 2)
    assert secret_finding["managed"]["credential"] == "mainframe@v1"
    assert secret_finding["managed"]["identity"] == READER
    assert secret_finding["action"] == "rotated"

    # Ended by the time the scan reported it: the task token and the token issued under
    # it are inactive, and the static secret's new version is the current one.
    assert _introspect(server, task["token"])["active"] is False
    leases = {item["id"]: item for item in server.cli("lease", "list", "--json").json()}
    assert leases[lease_id]["state"] == "revoked"
    versions = server.cli("credential", "show", "mainframe", "-o", "json").json()["versions"]
    states = {v["number"]: v["state"] for v in versions}
    assert states[2] == "current" and states[1] == "retired"

    # The audit links the exposure, its location and the revocation.
    exposures = _audit(server, "exposure.detected")
    of_token = next(e for e in exposures if e["details"].get("lease_id") == task_lease)
    assert of_token["details"]["location"]["file"] == "deploy.sh"
    assert of_token["details"]["location"]["commit"] == token_finding["commit"]
    assert of_token["details"]["fingerprint"] == token_finding["fingerprint"]
    revoked = [
        e
        for e in _audit(server, "lease.revoke")
        if (e["details"].get("trigger") or {}).get("exposure") == of_token["details"]["exposure"]
    ]
    assert {e["details"]["lease_id"] for e in revoked} >= {task_lease, lease_id}
    rotated = _audit(server, "credential.rotate")
    assert any(e["details"]["credential"] == "mainframe" for e in rotated)
    # Findings: a leak on the identity that held the token.
    leaked = server.cli("findings", "--rule", "leaked", "--json")
    assert leaked.code == 0, leaked.stderr
    assert any(f["identity"] == "batch-host" for f in leaked.json())

    # A second scan finds them again, now ended: nothing more is done.
    again = server.cli("scan", "--git", str(repo), "--format", "json").json()
    for finding in again["findings"]:
        if finding.get("managed"):
            assert finding["managed"]["valid"] is False and finding["action"] is None


def test_an_unmanaged_provider_secret_is_a_shadow_nhi_and_a_baseline_hides_it(
    server: Server, tmp_path: Path
) -> None:
    leaked = fake("github-token")
    source = tmp_path / "src"
    source.mkdir()
    (source / "ci.yml").write_text(f"env:\n  GH_TOKEN: {leaked}\n")
    report = tmp_path / "report.json"
    first = server.cli("scan", str(source), "--format", "json", "--report", str(report))
    assert first.code == 1, first.stderr
    [finding] = json.loads(report.read_text())["findings"]
    assert finding["rule"] == "github-token" and "managed" not in finding
    assert leaked not in report.read_text()

    shadows = server.cli("findings", "--rule", "shadow-nhi", "--json").json()
    [shadow] = [s for s in shadows if s["evidence"]["fingerprint"] == finding["fingerprint"]]
    assert shadow["owasp_nhi"] == ["NHI2"] and shadow["identity"] is None
    assert shadow["evidence"]["locations"][0]["file"].endswith("ci.yml")

    # With the report as baseline, the same secret is not new: exit 0, nothing listed.
    again = server.cli("scan", str(source), "--format", "json", "--baseline", str(report))
    assert again.code == 0, again.stderr
    assert again.json()["findings"] == []


def test_dry_run_matches_without_ending(server: Server, tmp_path: Path) -> None:
    task = task_token(server, "batch-host", tmp_path)
    task_lease = _introspect(server, task["token"])["jti"]
    source = tmp_path / "notes.txt"
    source.write_text(f"token: {task['token']}\n")
    dry = server.cli("scan", str(source), "--dry-run", "--format", "json")
    assert dry.code == 1, dry.stderr
    [finding] = dry.json()["findings"]
    assert finding["managed"]["lease"] == task_lease and finding["action"] is None
    assert _introspect(server, task["token"])["active"] is True


def test_a_signed_github_alert_is_matched_and_answered(
    tmp_path: Path,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys_file = tmp_path / "github-keys.json"
    keys_file.write_text(
        json.dumps(
            {"public_keys": [{"key_identifier": "k1", "key": pem.decode(), "is_current": True}]}
        )
    )
    with running_server(tmp_path, env={"TETHER_GITHUB_SCANNING_KEYS": str(keys_file)}) as server:
        task = task_token(server, "batch-host", tmp_path)
        body = json.dumps(
            [
                {
                    "token": task["token"],
                    "type": "tether_token",
                    "url": "https://github.com/a/b",
                    "source": "content",
                }
            ]
        ).encode()
        signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
        url = f"{server.addr}/v1/exposures"
        forged = httpx.post(
            url,
            content=body,
            headers={
                "Github-Public-Key-Identifier": "k1",
                "Github-Public-Key-Signature": base64.b64encode(
                    b"\x30\x06\x02\x01\x01\x02\x01\x01"
                ).decode(),
                "content-type": "application/json",
            },
        )
        assert forged.status_code == 401, forged.text
        assert _introspect(server, task["token"])["active"] is True

        answered = httpx.post(
            url,
            content=body,
            headers={
                "Github-Public-Key-Identifier": "k1",
                "Github-Public-Key-Signature": signature,
                "content-type": "application/json",
            },
        )
        assert answered.status_code == 200, answered.text
        assert answered.json() == [
            {
                "token_hash": hashlib.sha256(task["token"].encode()).hexdigest(),
                "token_type": "tether_token",
                "label": "true_positive",
            }
        ]
        assert _introspect(server, task["token"])["active"] is False


def test_reports_need_an_admin_or_exposure_token(server: Server) -> None:
    body = {"secrets": [{"secret": "x" * 20, "location": {"file": "a"}}]}
    url = f"{server.addr}/v1/exposures"
    assert httpx.post(url, json=body).status_code == 401
    auditor = server.cli("token", "create", "--name", "aud", "--role", "auditor", "--json").json()[
        "token"
    ]
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {auditor}"})
    assert refused.status_code == 403, refused.text
    bad = httpx.post(
        url,
        json={"secrets": [{"secret": "", "location": {}}]},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert bad.status_code == 422 and "secrets[0]" in bad.text
