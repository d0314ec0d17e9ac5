"""SARIF output: valid SARIF 2.1.0 that code scanning takes, stable ids, and no secret."""

from __future__ import annotations

import json
import re
import secrets
import string
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether._internal.tokens import new_token
from tether.scan import (
    Blob,
    Location,
    Managed,
    Rule,
    ScanFinding,
    Scanner,
    default_rules,
    fingerprint,
    redacted,
)
from tether.scan._sarif import FINGERPRINT_KEY, split_archive, to_sarif, uri_of

_SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
#: RFC 3986 URI-reference characters (the schema's "uri-reference" format, which
#: jsonschema does not check without optional packages).
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#]|%[0-9A-F]{2})*")


def _validate(document: dict[str, Any]) -> None:
    validator = jsonschema.validators.validator_for(_SCHEMA)
    validator.check_schema(_SCHEMA)
    validator(_SCHEMA).validate(document)
    for run in document["runs"]:
        for result in run["results"]:
            for location in result["locations"]:
                uri = location["physicalLocation"]["artifactLocation"]["uri"]
                assert _URI_CHARS.fullmatch(uri), uri


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _github_token() -> str:
    body = _random(_B62, 30)
    check, value = "", zlib.crc32(body.encode())
    for _ in range(6):
        value, rem = divmod(value, 62)
        check = _B62[rem] + check
    return "ghp_" + body + check


def _private_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


@pytest.fixture(scope="module")
def planted() -> dict[str, str]:
    """Fake secrets made now, each with the part of it that must never be shown."""
    password = _random(string.ascii_letters + string.digits, 24)
    pem = _private_key()
    return {
        "github": _github_token(),
        "tether": new_token(),
        "password": password,
        "database_url": f"postgresql://app:{password}@db.internal:5432/app",
        "pem": pem,
        "pem_body": "".join(pem.splitlines()[1:-1]),
    }


@pytest.fixture(scope="module")
def findings(planted: dict[str, str]) -> list[ScanFinding]:
    """What a scan of planted files reports, made as `tether scan` makes it."""
    key = secrets.token_bytes(32)
    blobs = [
        Blob("src/settings.py", f'GITHUB = "{planted["github"]}"\n'.encode()),
        Blob("deploy/db.env", f"DATABASE_URL={planted['database_url']}\n".encode()),
        Blob(
            "config/tokens.yaml",
            f"x: 1\ntoken: {planted['tether']}\n".encode(),
            commit="0123456789abcdef0123456789abcdef01234567",
            author="Dev Eloper",
            date="2026-01-02T03:04:05Z",
        ),
        Blob("logs.tar.gz!app/keys/ci key.pem", planted["pem"].encode()),
    ]
    scanner = Scanner()
    detections = [d for blob in blobs for d in scanner.scan_blob(blob)]
    assert {d.rule for d in detections} >= {
        "github-token",
        "database-url",
        "tether-token",
        "private-key",
    }
    return [
        ScanFinding(d.rule, d.location, fingerprint(key, d.secret), redacted(d.secret))
        for d in detections
    ]


def _managed(finding: ScanFinding) -> ScanFinding:
    return replace(
        finding,
        managed=Managed(
            identity="ci-deployer",
            owner="team-platform",
            valid=True,
            lease="lease-7f3a",
            credential="cred-42@v3",
        ),
        action="revoked",
    )


def test_no_findings_is_a_valid_log() -> None:
    document = to_sarif([], default_rules(), version="0.1.0")
    _validate(document)
    (run,) = document["runs"]
    assert run["results"] == []
    assert document["version"] == "2.1.0"
    assert run["tool"]["driver"]["name"] == "tether"
    assert run["tool"]["driver"]["version"] == "0.1.0"
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {r.id for r in default_rules()}


def test_findings_are_a_valid_log(findings: list[ScanFinding]) -> None:
    mixed = [_managed(f) if i % 2 else f for i, f in enumerate(findings)]
    for subset in (findings, mixed, [_managed(f) for f in findings]):
        _validate(to_sarif(subset, default_rules(), version="0.1.0"))


def test_the_log_holds_no_planted_secret(
    planted: dict[str, str], findings: list[ScanFinding]
) -> None:
    everything = findings + [_managed(f) for f in findings]
    text = json.dumps(to_sarif(everything, default_rules(), version="0.1.0"))
    for name in ("github", "tether", "password", "pem_body"):
        secret = planted[name]
        # Not the secret, nor any 8 characters of it: a redacted prefix is at most 6.
        windows = {secret[i : i + 8] for i in range(len(secret) - 7)}
        leaked = sorted(w for w in windows if w in text)
        assert not leaked, (name, leaked)
    assert planted["database_url"] not in text


def test_results_name_their_rule_stably(findings: list[ScanFinding]) -> None:
    rules = default_rules()
    first = to_sarif(findings, rules, version="0.1.0")["runs"][0]
    alone = to_sarif(findings[-1:], rules, version="0.1.0")["runs"][0]
    descriptors = first["tool"]["driver"]["rules"]
    for result in first["results"]:
        assert descriptors[result["ruleIndex"]]["id"] == result["ruleId"]
    # The index of a rule depends on the rule set, not on what was found.
    assert alone["results"][0]["ruleIndex"] == first["results"][-1]["ruleIndex"]
    assert [r["id"] for r in descriptors] == [r.id for r in rules]


def test_rules_carry_what_code_scanning_shows(findings: list[ScanFinding]) -> None:
    run = to_sarif(findings, default_rules(), version="0.1.0")["runs"][0]
    for descriptor in run["tool"]["driver"]["rules"]:
        assert descriptor["name"] and " " not in descriptor["name"]
        assert descriptor["shortDescription"]["text"]
        assert descriptor["fullDescription"]["text"]
        assert descriptor["help"]["text"]
        properties = descriptor["properties"]
        assert "security" in properties["tags"]  # what makes GitHub show the severity
        assert len(properties["tags"]) <= 20
        assert 0.0 <= float(properties["security-severity"]) <= 10.0
    by_id = {d["id"]: d for d in run["tool"]["driver"]["rules"]}
    assert float(by_id["github-token"]["properties"]["security-severity"]) >= 9.0
    generic = by_id["generic-secret"]["properties"]["security-severity"]
    assert float(generic) < float(by_id["github-token"]["properties"]["security-severity"])


def test_locations_are_relative_uris_with_a_region(findings: list[ScanFinding]) -> None:
    run = to_sarif(findings, default_rules(), version="0.1.0")["runs"][0]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    github = by_rule["github-token"]["locations"][0]["physicalLocation"]
    assert github["artifactLocation"]["uri"] == "src/settings.py"
    assert github["region"] == {"startLine": 1, "startColumn": 11}
    tether = by_rule["tether-token"]
    assert tether["locations"][0]["physicalLocation"]["region"]["startLine"] == 2
    assert tether["properties"]["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert tether["properties"]["author"] == "Dev Eloper"
    assert tether["properties"]["date"] == "2026-01-02T03:04:05Z"
    assert "commit 0123456789ab" in tether["message"]["text"]


def test_an_archive_member_is_reported_on_the_archive(findings: list[ScanFinding]) -> None:
    run = to_sarif(findings, default_rules(), version="0.1.0")["runs"][0]
    (result,) = [r for r in run["results"] if r["ruleId"] == "private-key"]
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "logs.tar.gz"
    assert "region" not in physical  # a member's line is not a line of the archive
    assert result["properties"]["archiveMember"] == "app/keys/ci key.pem"
    assert result["properties"]["memberLine"] == 1
    assert "archive member app/keys/ci key.pem, line 1" in result["message"]["text"]


def test_the_fingerprint_follows_the_secret_not_its_line(findings: list[ScanFinding]) -> None:
    finding = findings[0]
    moved = replace(finding, location=replace(finding.location, line=40, column=3))
    before, after = (
        to_sarif([f], default_rules(), version="0.1.0")["runs"][0]["results"][0]
        for f in (finding, moved)
    )
    assert before["partialFingerprints"] == after["partialFingerprints"]
    assert before["partialFingerprints"] == {FINGERPRINT_KEY: finding.fingerprint}
    assert (before["ruleId"], before["ruleIndex"]) == (after["ruleId"], after["ruleIndex"])
    assert after["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 40,
        "startColumn": 3,
    }


def test_the_message_names_rule_prefix_fingerprint_and_owner(
    findings: list[ScanFinding],
) -> None:
    finding = _managed(findings[0])
    result = to_sarif([finding], default_rules(), version="0.1.0")["runs"][0]["results"][0]
    text = result["message"]["text"]
    for part in (
        finding.rule,
        finding.redacted,
        finding.fingerprint,
        "identity ci-deployer",
        "owner team-platform",
        "lease lease-7f3a",
        "credential cred-42@v3",
        "Tether revoked it",
    ):
        assert part in text
    assert result["level"] == "warning"  # ended: it works no more
    assert result["properties"]["managed"]["identity"] == "ci-deployer"
    assert result["properties"]["action"] == "revoked"
    still = replace(finding, action=None)
    result = to_sarif([still], default_rules(), version="0.1.0")["runs"][0]["results"][0]
    assert result["level"] == "error"
    assert "still valid" in result["message"]["text"]


def test_an_unmanaged_provider_secret_is_called_a_shadow_identity(
    findings: list[ScanFinding],
) -> None:
    (github,) = [f for f in findings if f.rule == "github-token"]
    result = to_sarif([github], default_rules(), version="0.1.0")["runs"][0]["results"][0]
    assert "not managed by Tether" in result["message"]["text"]
    assert result["level"] == "error"


def test_a_finding_of_a_rule_outside_the_set_is_still_described() -> None:
    finding = ScanFinding("custom-rule", Location("a.txt", 3, 1), "f" * 32, "abc…")
    rules = [Rule(id="other", description="Other. More.", regex="x")]
    document = to_sarif([finding], rules, version="0.1.0")
    _validate(document)
    run = document["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["other", "custom-rule"]
    assert run["results"][0]["ruleIndex"] == 1
    assert run["tool"]["driver"]["rules"][0]["shortDescription"]["text"] == "Other"


def test_odd_locations_still_validate() -> None:
    findings = [
        ScanFinding("r", Location("dir with space/naïve#1.py", 1, 1), "a" * 32, "…"),
        ScanFinding("r", Location("-", 1, 1), "b" * 32, "…"),
        ScanFinding("r", Location("/abs/path/x.txt", 0, 0), "c" * 32, "…"),
        ScanFinding("r", Location("C:\\work\\x.txt", 2, 5), "d" * 32, "…"),
    ]
    document = to_sarif(findings, [], version="0.1.0")
    _validate(document)
    physical = [r["locations"][0]["physicalLocation"] for r in document["runs"][0]["results"]]
    assert physical[0]["artifactLocation"]["uri"] == "dir%20with%20space/na%C3%AFve%231.py"
    assert physical[2] == {"artifactLocation": {"uri": "file:///abs/path/x.txt"}}
    assert physical[3]["artifactLocation"]["uri"] == "file:///C:/work/x.txt"


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        ("src/app.py", "src/app.py"),
        ("./src/app.py", "src/app.py"),
        ("src\\win\\app.py", "src/win/app.py"),
        ("100%.txt", "100%25.txt"),
        ("c:colon.txt", "c%3Acolon.txt"),
        ("a?b", "a%3Fb"),
    ],
)
def test_uri_of(path: str, uri: str) -> None:
    assert uri_of(path) == uri


def test_split_archive() -> None:
    assert split_archive("a.tgz!m/x.log") == ("a.tgz", "m/x.log")
    assert split_archive("a.zip!b.tar!c") == ("a.zip", "b.tar!c")
    assert split_archive("plain.txt") == ("plain.txt", None)


def test_the_same_input_gives_the_same_log(findings: list[ScanFinding]) -> None:
    one = json.dumps(to_sarif(findings, default_rules(), version="0.1.0"), sort_keys=True)
    two = json.dumps(to_sarif(findings, default_rules(), version="0.1.0"), sort_keys=True)
    assert one == two


def test_the_schema_check_is_not_vacuous(findings: list[ScanFinding]) -> None:
    document = to_sarif(findings[:1], default_rules(), version="0.1.0")
    document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"] = {
        "startLine": 0
    }
    with pytest.raises(jsonschema.ValidationError):
        _validate(document)
    document = to_sarif(findings[:1], default_rules(), version="0.1.0")
    document["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        _validate(document)
