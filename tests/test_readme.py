"""The README's two commands are what CI runs and what a newcomer types."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scenario.harness import free_port
from tether.client import TetherClient

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


# -- the first hour, as the README and `make demo` tell it --
DEMO_ESTATE = ROOT / "src" / "tether" / "_demo" / "estate.yaml"


def _block_after(heading: str, language: str) -> str:
    """The first ```language block after `heading` in the README."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"{re.escape(heading)}.*?```{language}\n(.*?)```", text, re.S)
    assert found, f"no {language} block after {heading!r}"
    return found.group(1)


@dataclass
class Demo:
    """`tether dev` as `make demo` runs it: from the checkout, serving, its output kept."""

    home: Path
    port: int
    process: subprocess.Popen[str]
    output: list[str]

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def shell(self, script: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        """`script` in bash as a newcomer's shell runs it: no `tether` on PATH."""
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def as_readme_says(self, block: str) -> str:
        """A README block with the demo's defaults replaced by this demo's port and home."""
        return block.replace("127.0.0.1:8737", f"127.0.0.1:{self.port}").replace(
            ".tether/", f"{self.home}/"
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp("demo")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tether", "dev", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={"TETHER_HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=(home / "stderr.log").open("w"),
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if line.startswith("Serving on"):
                break
        assert output and output[-1].startswith("Serving on"), (home / "stderr.log").read_text()
        yield Demo(home, port, process, output)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_readmes_example_estate_is_the_one_the_demo_loads() -> None:
    assert (ROOT / "examples" / "estate.yaml").resolve() == DEMO_ESTATE.resolve()
    # What the wheel holds is what `tether dev` loads: package data, not a repository path.
    assert DEMO_ESTATE.is_file() and not DEMO_ESTATE.is_symlink()
    assert (
        (ROOT / "examples" / "policies" / "base.cedar")
        .resolve()
        .is_relative_to((ROOT / "src" / "tether" / "_demo").resolve())
    )


def test_the_readmes_commands_work_against_the_demo_as_written(demo: Demo) -> None:
    block = _block_after("## Using it", "sh")
    assert "tether apply -f examples/estate.yaml --dry-run" in block
    done = demo.shell(demo.as_readme_says(block))
    assert done.returncode == 0, done.stderr
    assert "payments-deployer" in done.stdout
    # The dry run of the README's estate against the demo plans nothing: it is what it loaded.
    assert "No changes: the stored estate matches the file." in done.stdout
    assert "retire" not in done.stdout


def test_the_demos_own_hints_work_as_printed(demo: Demo) -> None:
    start = demo.output.index("Use the CLI against it (in another shell):")
    hints = [line.strip() for line in demo.output[start + 1 :] if line.startswith("  ")]
    commands = [line for line in hints if not line.startswith("(")]
    assert any(line.endswith(" identity list") for line in commands), demo.output
    done = demo.shell("\n".join(commands))
    assert done.returncode == 0, done.stderr
    assert "8 identities" in done.stdout and "Audit log verified" in done.stdout


def test_the_readmes_sdk_example_runs_as_written(demo: Demo, tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text(
        _block_after("## The core loop", "python")
        + "\nassert token and task.ended\nprint('task', task.id)\n"
    )
    exports = demo.as_readme_says(_block_after("## Using it", "sh")).splitlines()[:2]
    steps = _block_after("Try it against `make demo`", "sh")
    done = demo.shell(
        "\n".join([*exports, steps.replace(".venv/bin/", f"{ROOT}/.venv/bin/")]), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.split("task ", 1)[1].split()[0]
    token = (demo.home / "dev-root-token").read_text().strip()
    with TetherClient(addr=demo.addr, token=token) as admin:
        leases = admin.get("/v1/leases", task=task_id)["items"]
    # The token it got was one lease of the task, and leaving the block revoked it.
    assert leases and {lease["state"] for lease in leases} == {"revoked"}
