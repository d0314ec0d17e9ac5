"""What the server refuses, the CLI says once: one line per problem, naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.running import estate, issue_token, running_server, task_token
from tests.factories import write_estate
from tests.scenario.harness import Server

LIBRARY_WORDS = ("Input should", "Field required", "String should", "Extra inputs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("errors")) as running:
        yield running


def _no_library_words(text: str) -> None:
    assert not [w for w in LIBRARY_WORDS if w in text], text


def test_a_bad_filter_is_one_line_naming_the_field(server: Server) -> None:
    done = server.cli("identity", "list", "--kind", "robot")
    assert done.code == 1
    assert done.stderr.count("query.kind") == 1, done.stderr
    assert "must be one of: service_account, api_key" in done.stderr
    _no_library_words(done.stderr)


def test_an_estate_the_server_refuses_names_each_problem_once(
    server: Server, tmp_path: Path
) -> None:
    document = estate()
    document["owners"] = [{"id": "ops"}, {"id": "sec", "contact": "s@example.com", "x": 1}]
    done = server.cli("apply", "-f", str(write_estate(tmp_path / "bad.yaml", document)))
    assert done.code == 1
    assert done.stderr.count("owners[0].contact") == 1, done.stderr
    assert done.stderr.count("owners[1].x") == 1, done.stderr
    assert done.stderr.startswith("error: the estate is invalid")
    assert len(done.stderr.strip().splitlines()) == 3  # the headline and one line each


def test_a_bad_duration_says_what_a_duration_is(server: Server, tmp_path: Path) -> None:
    lease = issue_token(server, task_token(server, "batch-host", tmp_path))
    done = server.cli("lease", "renew", lease, "--ttl", "1hour")
    assert done.code == 1
    assert done.stderr.count("ttl") == 1, done.stderr
    assert "must be a duration such as 90s" in done.stderr
    _no_library_words(done.stderr)


def test_a_missing_body_is_said_in_tethers_words(server: Server) -> None:
    refused = httpx.post(
        f"{server.addr}/v1/leases/revoke", headers={"authorization": f"Bearer {server.token}"}
    )
    assert refused.status_code == 422
    assert refused.json()["problems"] == [
        {"path": "(body)", "message": "is required: send a JSON object"}
    ]
    _no_library_words(refused.text)


def test_a_refused_token_is_the_servers_reason_once(server: Server, tmp_path: Path) -> None:
    task = task_token(server, "batch-host", tmp_path)
    expected = httpx.get(
        f"{server.addr}/v1/identities", headers={"authorization": f"Bearer {task['token']}"}
    ).json()["message"]
    admin, server.token = server.token, task["token"]
    try:
        done = server.cli("identity", "list")
    finally:
        server.token = admin
    assert done.code == 1
    assert done.stderr == f"error: {expected}\n"
