"""Listings as a user pipes them: ids whole, and every listing as table, wide, JSON or YAML."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import yaml

from tests.cli.running import LONG_ID, issue_token, running_server, task_token
from tests.scenario.harness import Server

LISTINGS = [
    ("identity", "list"),
    ("task", "list"),
    ("lease", "list"),
    ("token", "list"),
    ("target", "list"),
    ("credential", "list"),
    ("alerts",),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("output")
    with running_server(directory) as running:
        task = task_token(running, LONG_ID, directory)
        issue_token(running, task)
        yield running


@pytest.fixture(autouse=True)
def _narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pipe gets: no terminal, 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")


def test_a_piped_table_never_cuts_an_id(server: Server) -> None:
    listed = server.cli("identity", "list")
    assert listed.code == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if LONG_ID in line]
    assert "Uploads the nightly settlement files" in row  # one row, one line, not folded
    leases = server.cli("lease", "list", "--json").json()
    lease_ids = {x["id"] for x in leases}
    table = server.cli("lease", "list").stdout
    assert lease_ids and all(f" {lease_id} " in table for lease_id in lease_ids)
    assert LONG_ID in table


@pytest.mark.parametrize("command", LISTINGS, ids=" ".join)
def test_every_listing_prints_json_and_yaml_alike(server: Server, command: tuple[str]) -> None:
    as_json = server.cli(*command, "-o", "json")
    assert as_json.code == 0, as_json.stderr
    assert server.cli(*command, "--json").json() == as_json.json()
    as_yaml = server.cli(*command, "--output", "yaml")
    assert as_yaml.code == 0 and yaml.safe_load(as_yaml.stdout) == as_json.json()
    assert server.cli(*command, "-o", "wide").code == 0


def test_wide_adds_columns_and_json_keeps_every_field(server: Server) -> None:
    table = server.cli("identity", "list").stdout.splitlines()
    wide = server.cli("identity", "list", "-o", "wide").stdout.splitlines()
    header = next(line for line in table if "purpose" in line)
    wide_header = next(line for line in wide if "purpose" in line)
    assert "region" not in header and "region" in wide_header
    [item] = [i for i in server.cli("identity", "list", "-o", "json").json() if i["id"] == LONG_ID]
    assert item["region"] == "eu-west" and item["entitlements"] == [{"profile": "push"}]


def test_a_shown_item_has_the_same_formats(server: Server) -> None:
    as_json = server.cli("identity", "show", LONG_ID, "-o", "json").json()
    assert as_json["id"] == LONG_ID
    assert yaml.safe_load(server.cli("identity", "show", LONG_ID, "-o", "yaml").stdout) == as_json
    shown = server.cli("identity", "show", LONG_ID)
    assert shown.code == 0 and LONG_ID in shown.stdout


def test_a_narrow_terminal_never_cuts_an_id(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: write as to a terminal
    monkeypatch.setenv("COLUMNS", "60")
    listed = server.cli("identity", "list")
    assert listed.code == 0, listed.stderr
    assert LONG_ID in re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout)
