"""`tether policy test` as a user runs it: offline, a table or JSON, exit status as the verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.factories import estate_document, write_estate

FORBID_STAGING = (
    '@reason("staging identities get nothing")\n'
    'forbid (principal, action, resource) when { principal.environment == "staging" };\n'
)


def tether(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "policy", "test", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_passing_cases_against_an_estate_exit_zero(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "base.cedar").write_text(FORBID_STAGING, encoding="utf-8")
    document = estate_document(8)
    document["policies"] = ["policies/base.cedar"]
    estate = write_estate(tmp_path / "estate.yaml", document)
    cases = write(
        tmp_path / "cases.json",
        {
            "defaults": {"now": "2026-06-01T12:00:00Z", "profile": "api-read"},
            "cases": [
                {"name": "dev workload", "request": {"identity": "nhi-00002"}, "expect": "allow"},
                {
                    "name": "staging is forbidden",
                    "request": {"identity": "nhi-00004"},
                    "expect": "deny",
                    "reasons": ["policies/base.cedar"],
                },
                {
                    "name": "ttl above the profile",
                    "request": {"identity": "nhi-00002", "ttl": "1h"},
                    "expect": "deny",
                    "reasons": ["guardrail:ttl-exceeds-profile"],
                },
            ],
        },
    )
    done = tether(cases, "--estate", estate)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS") == 3 and "FAIL" not in done.stdout
    assert "3 passed, 0 failed." in done.stdout
    assert "staging identities get nothing" in done.stdout


def test_a_mismatch_exits_one_and_json_says_why(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "staging.cedar").write_text(FORBID_STAGING, encoding="utf-8")
    cases = write(
        tmp_path / "cases.json",
        {
            "cases": [
                {"name": "raw set permits nothing", "request": {}, "expect": "deny"},
                {
                    "name": "wrongly expected",
                    "request": {"identity": {"environment": "staging"}},
                    "expect": "allow",
                },
                {
                    "name": "wrong reason",
                    "request": {"identity": {"environment": "staging"}},
                    "expect": "deny",
                    "reasons": ["tether:default"],
                },
            ]
        },
    )
    done = tether(cases, "--policies", tmp_path / "rules", "--no-default-policy", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["default_policy"] is False
    assert report["policies"] == [str(tmp_path / "rules" / "staging.cedar")]
    assert (report["passed"], report["failed"]) == (1, 2)
    first, second, third = report["cases"]
    assert first["passed"] and first["policy_ids"] == []
    assert second["got"] == "deny" and not second["passed"]
    assert second["policy_ids"] == [str(tmp_path / "rules" / "staging.cedar")]
    assert third["missing_reasons"] == ["tether:default"]

    table = tether(cases, "--policies", tmp_path / "rules", "--no-default-policy")
    assert table.returncode == 1
    assert table.stdout.count("FAIL") == 2 and "1 passed, 2 failed." in table.stdout


def test_a_bad_file_is_one_line_naming_the_case_and_field(tmp_path: Path) -> None:
    cases = write(
        tmp_path / "cases.json",
        {"cases": [{"request": {}, "expect": "allow"}, {"request": {"ttl": "soon"}}]},
    )
    done = tether(cases)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "cases[1].expect: must be allow or deny" in done.stderr


def test_an_invalid_policy_is_refused_with_its_id(tmp_path: Path) -> None:
    (tmp_path / "bad.cedar").write_text(
        'forbid (principal, action, resource) when { principal.colour == "red" };',
        encoding="utf-8",
    )
    cases = write(
        tmp_path / "cases.json", {"policies": ["bad.cedar"], "cases": [{"expect": "deny"}]}
    )
    done = tether(cases)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bad.cedar" in done.stderr and "`colour`" in done.stderr


def test_the_schema_is_printed_offline() -> None:
    from click.testing import CliRunner

    from tether.cli._policy import policy

    text = CliRunner().invoke(policy, ["schema"])
    assert text.exit_code == 0 and "namespace Tether" in text.output
    as_json = CliRunner().invoke(policy, ["schema", "--json"])
    assert (
        as_json.exit_code == 0 and "Identity" in json.loads(as_json.output)["Tether"]["entityTypes"]
    )
