"""Every CLI error is one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.scenario.harness import free_port


def _tether(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unreachable_server_is_one_line() -> None:
    env = {"TETHER_ADDR": f"http://127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"}
    done = _tether("status", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "cannot reach Tether" in done.stderr and "Traceback" not in done.stderr


def test_invalid_estate_file_names_every_bad_field_without_a_server(tmp_path: Path) -> None:
    estate = tmp_path / "estate.yaml"
    estate.write_text("version: 1\npolicies: [missing.cedar, also-missing.cedar]\n")
    env = {"TETHER_ADDR": f"http://127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"}
    done = _tether("apply", "-f", str(estate), env=env)
    assert done.returncode == 1
    assert "policies[0]: cannot read missing.cedar" in done.stderr
    assert "policies[1]: cannot read also-missing.cedar" in done.stderr


def test_yaml_error_gives_line_and_column(tmp_path: Path) -> None:
    estate = tmp_path / "estate.yaml"
    estate.write_text("version: 1\nowners: [\n")
    done = _tether("apply", "-f", str(estate))
    assert done.returncode == 1 and "line 3" in done.stderr


def test_usage_errors_name_the_option() -> None:
    done = _tether("init", "--shares", "0")
    assert done.returncode == 2 and "--shares" in done.stderr


def test_schema_is_printed_offline() -> None:
    done = _tether("estate", "schema")
    assert done.returncode == 0 and '"title": "Tether estate"' in done.stdout
