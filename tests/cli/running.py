"""A real `tether serve`, initialized and unsealed with an estate applied, for CLI tests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.factories import write_estate
from tests.scenario.harness import Server

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
#: An id as long as ids are allowed to get, so a table that shortens ids shows it.
LONG_ID = "nightly-settlement-upload-" + "x" * 80 + "-prod-eu-west"


def estate() -> dict[str, Any]:
    base = {
        "kind": "service_account",
        "owner": "ops",
        "purpose": "Uploads the nightly settlement files to the clearing house, then reports",
        "justification": "OPS-1",
        "environment": "prod",
        "region": "eu-west",
        "entitlements": [{"profile": "push"}],
    }
    return {
        "version": 1,
        "owners": [{"id": "ops", "contact": "ops@example.com"}],
        "profiles": [{"id": "push", "provider": "token", "scopes": ["push"], "max_ttl": "1h"}],
        "identities": [
            {**copy.deepcopy(base), "id": "batch-host"},
            {**copy.deepcopy(base), "id": LONG_ID},
            {**copy.deepcopy(base), "id": "mainframe-batch", "kind": "legacy_static"},
        ],
    }


@contextmanager
def running_server(
    directory: Path, env: dict[str, str] | None = None, document: dict[str, Any] | None = None
) -> Iterator[Server]:
    """The server (with `env` added to its environment), its root token as
    `server.token`, `document` (default `estate()`) applied."""
    server = Server(home=directory / "home", extra_env=dict(env or {}))
    server.start()
    try:
        init = server.cli("init", "--shares", "1", "--threshold", "1", "--json").json()
        server.token = init["root_token"]
        assert server.cli("unseal", init["shares"][0]).code == 0
        applied = server.cli(
            "apply", "-f", str(write_estate(directory / "e.yaml", document or estate()))
        )
        assert applied.code == 0, applied.stderr
        yield server
    finally:
        server.stop()


def task_token(server: Server, identity: str, directory: Path) -> dict[str, Any]:
    """A started task of `identity` (`id`, `token`), attested with a join token."""
    join = server.cli("join-token", "create", "--identity", identity, "--json").json()
    join_file = directory / f"join-{identity[:20]}"
    join_file.write_text(join["token"])
    started = server.cli("task", "start", "run", "--attestation-file", str(join_file), "--json")
    assert started.code == 0, started.stderr
    return dict(started.json())


def issue_token(server: Server, task: dict[str, Any]) -> str:
    """An opaque token for profile `push` under `task`; its lease id."""
    issued = httpx.post(
        f"{server.addr}/oauth2/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": task["token"],
            "subject_token_type": ACCESS,
            "audience": "push",
        },
    )
    assert issued.status_code == 200, issued.text
    return str(issued.json()["tether_lease"])
