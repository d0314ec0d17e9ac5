"""Static credentials, alerts, lease renewal and target health from the CLI, against a real
server (and, for target health, the real PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.running import issue_token, running_server, task_token
from tests.scenario.harness import Server, free_port
from tests.services import throwaway_postgres_database

#: A first value given by the operator (generated here; never a live secret).
FIRST_VALUE = "first-value-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("admin")) as running:
        yield running


def _as(server: Server, token: str, *args: str) -> tuple[int, str, str]:
    admin, server.token = server.token, token
    try:
        done = server.cli(*args)
    finally:
        server.token = admin
    return done.code, done.stdout, done.stderr


def test_a_static_credential_from_add_to_exposure(server: Server, tmp_path: Path) -> None:
    value_file = tmp_path / "value"
    value_file.write_text(FIRST_VALUE + "\n")
    added = server.cli(
        "credential", "add", "mainframe", "--owner", "ops", "--reader", "mainframe-batch",
        "--overlap", "30m", "--value-file", str(value_file),
    )  # fmt: skip
    assert added.code == 0, added.stderr
    assert "mainframe: version 1 is current." in added.stdout
    [listed] = server.cli("credential", "list", "-o", "json").json()
    assert listed["id"] == "mainframe" and listed["readers"] == ["mainframe-batch"]
    assert listed["overlap"] == "30m"
    table = server.cli("credential", "list").stdout
    assert "mainframe" in table and "mainframe-batch" in table

    # An admin sees metadata; a reader's task sees the value only when it asks for it.
    meta = server.cli("credential", "show", "mainframe", "-o", "json").json()
    assert meta["versions"][0]["state"] == "current" and "value" not in meta
    reader = task_token(server, "mainframe-batch", tmp_path)["token"]
    for args in ((), ("-o", "json"), ("-o", "yaml"), ("-o", "wide")):
        code, out, _ = _as(server, reader, "credential", "show", "mainframe", *args)
        assert code == 0 and FIRST_VALUE not in out
    code, out, _ = _as(server, reader, "credential", "show", "mainframe")
    assert "--reveal" in out
    code, out, _ = _as(server, reader, "credential", "show", "mainframe", "--reveal", "--json")
    assert code == 0 and json.loads(out)["value"] == FIRST_VALUE
    code, out, _ = _as(server, reader, "credential", "show", "mainframe", "--reveal")
    assert code == 0 and FIRST_VALUE in out

    rotated = server.cli("credential", "rotate", "mainframe")
    assert rotated.code == 0 and "version 2 is current" in rotated.stdout
    assert "version 1 stays valid until" in rotated.stdout
    again = server.cli("rotate", "mainframe", "--json").json()  # the older spelling stays
    assert [v["state"] for v in again["versions"]][-1] == "current"

    exposed = server.cli("credential", "exposed", "mainframe", "--evidence", "pasted in #ops")
    assert exposed.code == 0, exposed.stderr
    assert "version 4 is current" in exposed.stdout
    assert "version 3 was retired at once" in exposed.stdout
    alerts = server.cli("alerts", "-o", "json").json()
    [exposure] = [a for a in alerts if a["action"] == "alert.exposure"]
    assert "pasted in #ops" in exposure["reason"]
    table = server.cli("alerts").stdout
    assert "exposure" in table and "pasted in #ops" in table
    later = server.cli("alerts", "--after", str(exposure["seq"]), "-o", "json").json()
    assert all(a["seq"] > exposure["seq"] for a in later)
    assert all(FIRST_VALUE not in text for text in server.cli_stderr)


def test_a_credential_the_server_refuses_names_the_field(server: Server) -> None:
    done = server.cli(
        "credential", "add", "bad", "--owner", "ops", "--reader", "x", "--kind", "vault"
    )
    assert done.code == 1 and done.stderr.count("kind") == 1, done.stderr
    assert "must be one of: static, postgres-static" in done.stderr


def test_lease_renew_by_admin_and_by_the_task(server: Server, tmp_path: Path) -> None:
    task = task_token(server, "batch-host", tmp_path)
    lease = issue_token(server, task)
    renewed = server.cli("lease", "renew", lease, "--ttl", "30m")
    assert renewed.code == 0, renewed.stderr
    assert f"Lease {lease} renewed until" in renewed.stdout and "requested ttl" in renewed.stdout
    code, out, err = _as(server, task["token"], "lease", "renew", lease, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["id"] == lease and json.loads(out)["state"] == "active"
    missing = server.cli("lease", "renew", "lse_nope")
    assert missing.code == 1 and missing.stderr.count("lse_nope") == 1


@pytest.mark.service
def test_target_health(server: Server, tmp_path: Path) -> None:
    with throwaway_postgres_database() as url:
        dsn = tmp_path / "dsn"
        dsn.write_text(url)
        added = server.cli("target", "add", "ledger", "--kind", "postgres", "--dsn-file", str(dsn))
        assert added.code == 0, added.stderr
        healthy = server.cli("target", "health", "ledger")
        assert healthy.code == 0, healthy.stderr
        assert "server_version" in healthy.stdout and url not in healthy.stdout
        report = server.cli("target", "health", "ledger", "-o", "json").json()
        assert report["ok"] is True and report["createrole"] is True

    dsn.write_text(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert (
        server.cli("target", "add", "gone", "--kind", "postgres", "--dsn-file", str(dsn)).code == 0
    )
    down = server.cli("target", "health", "gone")
    assert down.code == 2 and "target gone is not healthy" in down.stderr
    unknown = server.cli("target", "health", "nope")
    assert unknown.code == 1 and unknown.stderr.count("no target 'nope'") == 1
