"""Baselines: what an earlier report listed is known, wherever in its file it moves; and
the pre-commit hook that runs the scan on staged changes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tether.scan import Location, Managed, ScanFinding, default_rules
from tether.scan._baseline import Baseline, InvalidBaseline
from tether.scan._sarif import to_sarif
from tether.scan.errors import ScanError

_REPO = Path(__file__).resolve().parents[2]


def _fp() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def findings() -> list[ScanFinding]:
    commit = Location("config/app.yaml", 7, 3, commit="ab" * 20, author="Dev", date="2026-01-01")
    return [
        ScanFinding("github-token", Location("src/settings.py", 1, 11), _fp(), "ghp_ab…"),
        ScanFinding("tether-token", commit, _fp(), "tth_ab…"),
        ScanFinding("private-key", Location("logs.tgz!app/ci key.pem", 1, 1), _fp(), "-----B…"),
        ScanFinding("database-url", Location("dir with space/naïve#1.env", 2, 14), _fp(), "…"),
        ScanFinding("generic-secret", Location("/abs/secrets.txt", 4, 1), _fp(), "abc…"),
        ScanFinding(
            "tether-token",
            Location("deploy/token.txt", 1, 1),
            _fp(),
            "tth_cd…",
            Managed("ci", "team", valid=True, lease="lease-1"),
            "revoked",
        ),
    ]


def _write_json(path: Path, findings: list[ScanFinding]) -> Path:
    document = {
        "findings": [f.to_json() for f in findings],
        "stats": {"bytes": 10, "files": 1, "seconds": 0.1},
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True))
    return path


def _write_sarif(path: Path, findings: list[ScanFinding]) -> Path:
    path.write_text(json.dumps(to_sarif(findings, default_rules(), version="0.1.0")))
    return path


@pytest.fixture(params=["json", "sarif"])
def baseline_file(
    request: pytest.FixtureRequest, tmp_path: Path, findings: list[ScanFinding]
) -> Path:
    if request.param == "json":
        return _write_json(tmp_path / "baseline.json", findings)
    return _write_sarif(tmp_path / "baseline.sarif", findings)


def test_a_baseline_holds_every_finding_it_was_made_from(
    baseline_file: Path, findings: list[ScanFinding]
) -> None:
    baseline = Baseline.load(str(baseline_file))
    assert len(baseline) == len(findings)
    assert all(baseline.contains(f) for f in findings)


def test_a_moved_line_is_still_known(baseline_file: Path, findings: list[ScanFinding]) -> None:
    baseline = Baseline.load(str(baseline_file))
    for finding in findings:
        moved = replace(finding, location=replace(finding.location, line=99, column=1))
        assert baseline.contains(moved)
        # A later commit that adds the same secret again is still the same finding.
        recommitted = replace(finding, location=replace(finding.location, commit="cd" * 20))
        assert baseline.contains(recommitted)


def test_a_new_secret_rule_or_file_is_new(baseline_file: Path, findings: list[ScanFinding]) -> None:
    baseline = Baseline.load(str(baseline_file))
    finding = findings[0]
    assert not baseline.contains(replace(finding, fingerprint=_fp()))
    assert not baseline.contains(replace(finding, rule="generic-secret"))
    other_file = replace(finding.location, file="src/other.py")
    assert not baseline.contains(replace(finding, location=other_file))


def test_windows_separators_and_dot_prefix_are_the_same_file(
    tmp_path: Path, findings: list[ScanFinding]
) -> None:
    baseline = Baseline.load(str(_write_json(tmp_path / "b.json", findings)))
    finding = findings[0]
    for spelled in ("./src/settings.py", "src\\settings.py"):
        assert baseline.contains(replace(finding, location=replace(finding.location, file=spelled)))


def test_an_empty_report_is_an_empty_baseline(tmp_path: Path) -> None:
    for path in (_write_json(tmp_path / "e.json", []), _write_sarif(tmp_path / "e.sarif", [])):
        baseline = Baseline.load(str(path))
        assert len(baseline) == 0
        assert not baseline.contains(
            ScanFinding("github-token", Location("a.py", 1, 1), _fp(), "…")
        )


def test_a_baseline_can_be_made_from_findings(findings: list[ScanFinding]) -> None:
    baseline = Baseline.of(findings[:2])
    assert baseline.contains(findings[0]) and baseline.contains(findings[1])
    assert not baseline.contains(findings[2])


# -- what is not a baseline: each error names the file and the problem --


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(InvalidBaseline, match=f"baseline {path}: cannot be read"):
        Baseline.load(str(path))


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidBaseline, match="cannot be read"):
        Baseline.load(str(tmp_path))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"{not json", "not JSON \\(Expecting property name enclosed in double quotes at line 1"),
        (b"[]", "neither a Tether JSON report"),
        (b'{"stats": {}}', "neither a Tether JSON report"),
        (b'{"findings": {}}', "findings: must be a list"),
        (b'{"findings": [1]}', "findings\\[0\\]: must be an object"),
        (
            b'{"findings": [{"rule": "r", "file": "a", "fingerprint": "f"},'
            b' {"rule": "r", "file": "a"}]}',
            "findings\\[1\\]: fingerprint: missing",
        ),
        (
            b'{"findings": [{"rule": 1, "file": "a", "fingerprint": "f"}]}',
            "findings\\[0\\]: rule: must be a string",
        ),
        (b'{"runs": {}}', "runs: must be a list"),
        (
            b'{"runs": [{"results": [{"ruleId": "r", "locations": []}]}]}',
            "runs\\[0\\].results\\[0\\]: has no tether/fingerprint/v1 partial fingerprint",
        ),
        (
            b'{"runs": [{"results": [{"ruleId": "r", "partialFingerprints": '
            b'{"tether/fingerprint/v1": "f"}}]}]}',
            "runs\\[0\\].results\\[0\\]: has no locations\\[0\\].physicalLocation"
            ".artifactLocation.uri",
        ),
        (
            b'{"runs": [{"results": [{"partialFingerprints": {"tether/fingerprint/v1": "f"}}]}]}',
            "runs\\[0\\].results\\[0\\]: has no ruleId",
        ),
    ],
)
def test_an_invalid_baseline_says_what_is_wrong(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "baseline.json"
    path.write_bytes(content)
    with pytest.raises(InvalidBaseline, match=f"^baseline {path}: {problem}"):
        Baseline.load(str(path))


def test_a_sarif_result_found_by_rule_index(tmp_path: Path, findings: list[ScanFinding]) -> None:
    document = to_sarif(findings, default_rules(), version="0.1.0")
    for result in document["runs"][0]["results"]:
        del result["ruleId"]
    path = tmp_path / "b.sarif"
    path.write_text(json.dumps(document))
    assert all(Baseline.load(str(path)).contains(f) for f in findings)


def test_invalid_baseline_is_a_scan_error() -> None:
    assert issubclass(InvalidBaseline, ScanError)


# -- the pre-commit hook --


def test_the_hook_manifest_is_what_pre_commit_reads() -> None:
    hooks = yaml.safe_load((_REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hooks, list)
    (hook,) = hooks
    assert hook["id"] == "tether-scan"
    assert hook["entry"] == "tether scan --staged"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert hook["stages"] == ["pre-commit"]
    # pre-commit's manifest schema: these are required, and "pre-commit" as a stage
    # name exists from 3.2.0 on.
    assert {"id", "name", "entry", "language"} <= hook.keys()
    assert hook["minimum_pre_commit_version"] == "3.2.0"


def _tether() -> str:
    found = shutil.which("tether", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the tether command is not installed in this environment")
    return found


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """No server, and the local fingerprint key in the test's own directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["HOME"] = str(tmp_path)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


def _password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_hook_entry_fails_a_commit_that_stages_a_secret(
    tmp_path: Path, offline_env: dict[str, str]
) -> None:
    """What pre-commit runs: the hook's entry, in the repository, no file names."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    hook = yaml.safe_load((_REPO / ".pre-commit-hooks.yaml").read_text())[0]
    command = [_tether(), *hook["entry"].split()[1:]]
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "app.py").write_text("x = 1\n")
    _git(repo, "add", "app.py")
    clean = _run(command, repo, offline_env)
    assert clean.returncode == 0, clean.stderr
    password = _password()
    (repo / "db.env").write_text(f"DATABASE_URL=postgresql://app:{password}@db:5432/app\n")
    _git(repo, "add", "db.env")
    dirty = _run(command, repo, offline_env)
    assert dirty.returncode == 1, dirty.stderr
    assert password not in dirty.stdout + dirty.stderr


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_the_baseline_workflow_reports_only_what_is_new(
    tmp_path: Path, offline_env: dict[str, str], fmt: str
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    first = _password()
    (tree / "db.env").write_text(f"DATABASE_URL=postgresql://app:{first}@db:5432/app\n")
    report = tmp_path / f"baseline.{fmt}"

    def scan(*args: str) -> subprocess.CompletedProcess[str]:
        command = [_tether(), "scan", "--offline", *args, "."]
        return subprocess.run(
            command, check=False, cwd=tree, env=offline_env, capture_output=True, text=True
        )

    made = scan("--format", fmt, "--report", str(report))
    assert made.returncode == 1, made.stderr
    assert first not in report.read_text()
    assert scan("--baseline", str(report)).returncode == 0
    # The known secret moves down the file: still known.
    (tree / "db.env").write_text(f"# moved\n\nDATABASE_URL=postgresql://app:{first}@db/app\n")
    assert scan("--baseline", str(report)).returncode == 0
    second = _password()
    (tree / "more.env").write_text(f"REDIS_URL=redis://default:{second}@cache:6379/0\n")
    again = scan("--baseline", str(report), "--format", "json")
    assert again.returncode == 1, again.stderr
    assert [f["file"] for f in json.loads(again.stdout)["findings"]] == ["more.env"]
