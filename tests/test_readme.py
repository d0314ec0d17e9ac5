"""The README's two commands are what CI runs and what a newcomer types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks() -> list[str]:
    return re.findall(r"```\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    first, second = (block.strip() for block in _code_blocks()[:2])
    assert (first, second) == ("make demo", "make test")
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t\$\(BIN\)/tether dev$", makefile, re.M)


def test_dev_mode_sets_up_and_shows_what_it_did(tmp_path: Path) -> None:
    env = {"TETHER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "tether", "dev", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for _ in range(2)
    ]
    first, second = runs
    assert first.returncode == 0, first.stderr
    assert "18 created" in first.stdout
    assert "8 active identities" in first.stdout and "chain verified" in first.stdout
    # A second start reuses the state: auto-unseal from the key file, nothing to apply.
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout and "unsealed" in second.stdout
    assert (tmp_path / "dev-unseal.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "dev-root-token").stat().st_mode & 0o777 == 0o600
    token = (tmp_path / "dev-root-token").read_text()
    assert token not in first.stdout + first.stderr + second.stdout + second.stderr
