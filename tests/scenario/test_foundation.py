"""The foundation end to end: a real server process, the real CLI, a real database file.

init 5/3 → unseal with 3 → apply ≥ 50 identities of every kind → re-apply (no change) →
change one field (one update) → drop one (retired) → audit verifies → edit one audit row
in the database → verify fails naming it. Then search the database, the logs and all
error output for every secret the run handled.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.factories import KINDS, estate_document, write_estate
from tests.scenario.harness import Server
from tests.services import throwaway_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "sqlite":
        s = Server(home=tmp_path / "home")
        s.start()
        yield s
        s.stop()
        return
    with throwaway_postgres_database() as url:
        s = Server(home=tmp_path / "home", database_url=url)
        s.start()
        yield s
        s.stop()


def _tamper(server: Server, statement: str) -> None:
    if server.database_url is None:
        with sqlite3.connect(server.home / "tether.db") as db:
            db.execute(statement)
    else:
        with psycopg.connect(server.database_url, autocommit=True) as db:
            db.execute(statement)


def _database_bytes(server: Server) -> bytes:
    if server.database_url is None:
        return b"".join(p.read_bytes() for p in server.home.glob("tether.db*"))
    dump = subprocess.run(
        ["pg_dump", "--data-only", server.database_url], capture_output=True, check=True, timeout=60
    )
    return dump.stdout


def test_foundation_scenario(server: Server, tmp_path: Path) -> None:
    # -- init and unseal --
    init = server.cli("init", "--shares", "5", "--threshold", "3", "--json")
    assert init.code == 0, init.stderr
    shares, root = init.json()["shares"], init.json()["root_token"]
    assert len(shares) == 5
    server.token = root
    assert server.cli("status", "--json").json()["sealed"] is True
    assert server.cli("identity", "list").code != 0  # sealed: refused
    for number, share in enumerate(shares[1:4], 1):
        status = server.cli("unseal", share, "--json").json()
        assert status["sealed"] is (number < 3)
    assert server.cli("status", "--json").json()["sealed"] is False

    # -- apply an estate of 56 identities covering every kind --
    doc = estate_document(56)
    doc["policies"] = ["policies/base.cedar"]
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "base.cedar").write_text("permit (principal, action, resource);\n")
    estate = write_estate(tmp_path / "estate.yaml", doc)
    dry = server.cli("apply", "-f", str(estate), "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert dry.json()["summary"]["create"] > 56
    assert server.cli("identity", "list", "--json").json() == []  # dry run changed nothing
    first = server.cli("apply", "-f", str(estate), "--json")
    assert first.code == 0, first.stderr
    created_ids = {c["id"] for c in first.json()["changes"] if c["type"] == "identity"}
    assert len(created_ids) == 56
    listed = server.cli("identity", "list", "--json").json()
    assert {i["kind"] for i in listed} == set(KINDS)

    # -- re-apply: no change --
    again = server.cli("apply", "-f", str(estate), "--json").json()
    assert again["changes"] == []
    assert "No changes" in server.cli("apply", "-f", str(estate)).stdout

    # -- change one field: exactly one update, naming the field --
    doc["identities"][7]["purpose"] = "A changed purpose"
    write_estate(estate, doc)
    changed = server.cli("apply", "-f", str(estate), "--json").json()["changes"]
    assert changed == [
        {"action": "update", "type": "identity", "id": "nhi-00007", "fields": ["purpose"]}
    ]

    # -- drop one identity: retired, not deleted --
    dropped = doc["identities"].pop(3)
    write_estate(estate, doc)
    retired = server.cli("apply", "-f", str(estate), "--json").json()["changes"]
    assert retired == [
        {"action": "retire", "type": "identity", "id": dropped["id"], "fields": ["status"]}
    ]
    shown = server.cli("identity", "show", dropped["id"], "--json").json()
    assert shown["status"] == "retired" and shown["purpose"] == dropped["purpose"]
    retired_list = server.cli("identity", "list", "--status", "retired", "--json").json()
    assert [i["id"] for i in retired_list] == [dropped["id"]]

    # -- a human-readable listing and an invalid estate, for the error-output search --
    assert "nhi-00000" in server.cli("identity", "list", "--kind", "service_account").stdout
    doc["identities"][0]["owner"] = "nobody"
    bad = server.cli("apply", "-f", str(write_estate(tmp_path / "bad.yaml", doc)))
    assert bad.code == 1 and "identities[0].owner: unknown owner 'nobody'" in bad.stderr

    # -- tokens with roles, and the audit trail --
    auditor = server.cli(
        "token", "create", "--name", "auditors", "--role", "auditor", "--json"
    ).json()["token"]
    verify = server.cli("audit", "verify")
    assert verify.code == 0 and "verified" in verify.stdout, verify.stderr
    export_file = tmp_path / "audit.jsonl"
    assert server.cli("audit", "export", "-o", str(export_file)).code == 0
    assert server.cli("audit", "verify", "--file", str(export_file)).code == 0
    server.token = "tth_" + "0" * 49  # well-formed shape, bad checksum: refused cleanly
    refused = server.cli("identity", "list")
    assert refused.code == 1 and refused.stderr.count("\n") == 1
    server.token = root

    # -- tamper with one row in the database: verify fails and names it --
    _tamper(server, "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 12")
    tampered = server.cli("audit", "verify")
    assert tampered.code != 0
    assert "entry 12" in tampered.stderr
    offline = server.cli("audit", "verify", "--file", str(export_file))
    assert offline.code == 0  # the export taken before the edit still verifies

    # -- no secret in the clear: database file, WAL, logs, all error output --
    server.stop()
    secrets_seen = [root, auditor, *shares]
    haystacks = {
        "database": _database_bytes(server),
        "server log": server.log_file.read_bytes(),
        "cli stderr": "".join(server.cli_stderr).encode(),
    }
    for where, data in haystacks.items():
        for secret in secrets_seen:
            assert secret.encode() not in data, f"a secret appears in the {where}"
