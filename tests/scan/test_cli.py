"""`tether scan` offline, as a user runs it: exit status, outputs, baselines across
machines, and errors."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scan.fakes import fake


def _scan(
    *args: str, home: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    clean.update({"XDG_CONFIG_HOME": str(home), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "tether", "scan", *args],
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def leaked(tmp_path: Path) -> tuple[Path, str]:
    token = fake("npm-token")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / ".npmrc").write_text(f"//registry.npmjs.org/:_authToken={token}\n")
    (tree / "README.md").write_text("nothing to see\n")
    return tree, token


def test_exit_status_and_outputs(tmp_path: Path, leaked: tuple[Path, str]) -> None:
    tree, token = leaked
    table = _scan(str(tree), home=tmp_path)
    assert table.returncode == 1, table.stderr
    assert "npm-token" in table.stdout and token not in table.stdout + table.stderr
    as_json = _scan(str(tree), "--format", "json", home=tmp_path)
    document = json.loads(as_json.stdout)
    [finding] = document["findings"]
    assert finding["file"].endswith(".npmrc") and finding["line"] == 1
    assert finding["action"] is None and "managed" not in finding
    assert document["stats"]["files"] == 2 and document["stats"]["bytes"] > 0
    sarif = _scan(str(tree), "--format", "sarif", home=tmp_path)
    assert sarif.returncode == 1 and json.loads(sarif.stdout)["version"] == "2.1.0"
    assert token not in sarif.stdout
    clean = _scan(str(tree / "README.md"), home=tmp_path)
    assert clean.returncode == 0, clean.stderr
    piped = _scan("--stdin", "--format", "json", home=tmp_path, stdin=f"x={token}\n")
    assert piped.returncode == 1 and json.loads(piped.stdout)["findings"][0]["file"] == "-"


def test_a_baseline_made_with_a_shared_key_holds_on_another_machine(
    tmp_path: Path, leaked: tuple[Path, str]
) -> None:
    tree, _ = leaked
    key = tmp_path / "scan.key"
    key.write_text(secrets.token_hex(32))
    baseline = tmp_path / "baseline.json"
    made = _scan(
        str(tree), "--format", "json", "--report", str(baseline), "--key-file", str(key),
        home=tmp_path / "dev",
    )  # fmt: skip
    assert made.returncode == 1, made.stderr
    elsewhere = _scan(
        str(tree), "--baseline", str(baseline), home=tmp_path / "ci",
        env={"TETHER_SCAN_KEY_FILE": str(key)},
    )  # fmt: skip
    assert elsewhere.returncode == 0, elsewhere.stderr
    # Without the key, the other machine cannot know the secret is the same one.
    unkeyed = _scan(str(tree), "--baseline", str(baseline), home=tmp_path / "ci")
    assert unkeyed.returncode == 1


def test_an_allow_file_adds_paths_and_regexes_to_the_built_in_rules(
    tmp_path: Path, leaked: tuple[Path, str]
) -> None:
    tree, token = leaked
    by_path = tmp_path / "by-path.toml"
    by_path.write_text('[allowlist]\npaths = ["\\\\.npmrc$"]\n')
    assert _scan(str(tree), "--allow", str(by_path), home=tmp_path).returncode == 0
    by_regex = tmp_path / "by-regex.toml"
    by_regex.write_text(f'[allowlist]\nregexes = ["{token[-6:]}$"]\n')
    assert _scan(str(tree), "--allow", str(by_regex), home=tmp_path).returncode == 0
    other = tmp_path / "other.toml"
    other.write_text('[allowlist]\nregexes = ["^nothing$"]\n')
    assert _scan(str(tree), "--allow", str(other), home=tmp_path).returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing-dir",), "missing-dir"),
        (("--since", "HEAD", "."), "--since needs --git"),
        (("--git", "--stdin"), "choose one of"),
        (("--rules", "{binary}", "."), "--rules"),
        (("--baseline", "{binary}", "."), "baseline"),
        (("--key-file", "{binary}", "."), "--key-file"),
    ],
)
def test_errors_exit_2_and_name_what_is_wrong(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    given = [a.replace("{binary}", str(binary)) for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "tether", "scan", *given],
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
