"""SARIF 2.1.0 for code-scanning upload (`tether scan --format sarif`).

Only `ScanFinding` fields go in, so no secret can come out: a result shows the redacted
prefix and the keyed fingerprint. `ruleId` is the rule's id and `ruleIndex` its place in
the driver's rules, both stable for a rule set; `partialFingerprints` carries the
fingerprint, which follows the secret, not its line, so an alert survives a line move.

An archive member (`logs.tgz!app/out.log`) is reported on the archive, the file a
repository holds; its member and line are in the message and the properties, and there
is no region, since a line of the member is not a line of the archive.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from pathlib import PureWindowsPath
from typing import Any

from tether.scan._model import Location, Rule, ScanFinding

__all__ = [
    "FINGERPRINT_KEY",
    "SARIF_SCHEMA",
    "relative_name",
    "split_archive",
    "to_sarif",
    "uri_of",
]

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
#: The partial fingerprint's name; its version changes if the fingerprint's input does.
FINGERPRINT_KEY = "tether/fingerprint/v1"
INFORMATION_URI = "https://tether.dev/"

#: GitHub shows security severity (CVSS-like, 0-10) for rules tagged `security`:
#: 9.0 and up is critical. A secret of a known format is all but certainly real.
_SEVERITY_SPECIFIC = "9.0"
_SEVERITY_GENERIC = "7.0"
#: GitHub keeps at most 20 tags per rule.
_MAX_TAGS = 20
_HELP = (
    "A secret was found in the scanned content. If Tether manages it, the scan says "
    "whose it is and whether Tether revoked or rotated it. If not, rotate it where it "
    "was issued, remove it from the file and from the history, and bring it under "
    "Tether's management. A finding that is known and accepted goes into a baseline "
    "(`tether scan --baseline FILE`); a line that holds no secret can carry "
    "`tether:allow`."
)
_DEAD_ACTIONS = frozenset({"revoked", "rotated"})


def to_sarif(
    findings: Sequence[ScanFinding], rules: Sequence[Rule], *, version: str
) -> dict[str, Any]:
    """One SARIF log, one run, of `findings` by `rules` (a finding's rule need not be
    among them: it is described by its id alone)."""
    by_id: dict[str, Rule] = {}
    for rule in rules:
        by_id.setdefault(rule.id, rule)
    index = {rule_id: i for i, rule_id in enumerate(by_id)}
    for finding in findings:
        index.setdefault(finding.rule, len(index))
    ids = list(index)
    driver: dict[str, Any] = {
        "name": "tether",
        "informationUri": INFORMATION_URI,
        "version": version,
        "rules": [_descriptor(rule_id, by_id.get(rule_id)) for rule_id in ids],
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                # The engine counts columns in characters, not UTF-16 units.
                "columnKind": "unicodeCodePoints",
                "results": [_result(f, index[f.rule], by_id.get(f.rule)) for f in findings],
            }
        ],
    }


def _descriptor(rule_id: str, rule: Rule | None) -> dict[str, Any]:
    description = rule.description if rule is not None and rule.description else ""
    short = _first_sentence(description) or f"A secret matching rule {rule_id}"
    tags = ["security", "secret", "external/cwe/cwe-798"]
    for tag in rule.tags if rule is not None else ():
        if tag not in tags:
            tags.append(tag)
    generic = rule is None or "generic" in rule.tags
    precision = "very-high" if rule is not None and rule.validator else "high"
    return {
        "id": rule_id,
        "name": _pascal(rule_id),
        "shortDescription": {"text": short},
        "fullDescription": {"text": description or short},
        "help": {"text": _HELP},
        "defaultConfiguration": {"level": "error"},
        "properties": {
            "tags": tags[:_MAX_TAGS],
            "precision": "medium" if generic else precision,
            "security-severity": _SEVERITY_GENERIC if generic else _SEVERITY_SPECIFIC,
        },
    }


def _result(finding: ScanFinding, rule_index: int, rule: Rule | None) -> dict[str, Any]:
    location = finding.location
    path, member = split_archive(location.file)
    physical: dict[str, Any] = {"artifactLocation": {"uri": uri_of(path)}}
    if member is None and location.line >= 1:
        region: dict[str, int] = {"startLine": location.line}
        if location.column >= 1:
            region["startColumn"] = location.column
        physical["region"] = region
    properties: dict[str, Any] = {"redacted": finding.redacted}
    if member is not None:
        properties["archiveMember"] = member
        properties["memberLine"] = location.line
    for key in ("commit", "author", "date"):
        value = getattr(location, key)
        if value is not None:
            properties[key] = value
    if finding.managed is not None:
        properties["managed"] = finding.managed.to_json()
    if finding.action is not None:
        properties["action"] = finding.action
    return {
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": "warning" if _dead(finding) else "error",
        "message": {"text": _message(finding, rule, member)},
        "locations": [{"physicalLocation": physical}],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": properties,
    }


def _dead(finding: ScanFinding) -> bool:
    """Known to work no more: Tether ended it, or it had already ended."""
    managed = finding.managed
    return managed is not None and (finding.action in _DEAD_ACTIONS or not managed.valid)


def _message(finding: ScanFinding, rule: Rule | None, member: str | None) -> str:
    location = finding.location
    parts = [
        f"{finding.rule}: a secret ({finding.redacted}, fingerprint {finding.fingerprint})"
        + _where(location, member)
        + "."
    ]
    managed = finding.managed
    if managed is not None:
        held = [f"identity {managed.identity}", f"owner {managed.owner}"]
        if managed.lease is not None:
            held.append(f"lease {managed.lease}")
        if managed.credential is not None:
            held.append(f"credential {managed.credential}")
        parts.append("It is a Tether-managed credential: " + ", ".join(held) + ".")
        if finding.action is not None:
            parts.append(f"Tether {finding.action} it.")
        elif managed.valid:
            parts.append("It is still valid: revoke or rotate it.")
        else:
            parts.append("It is no longer valid.")
    elif rule is not None and rule.provider is not None:
        parts.append(
            f"It is not managed by Tether: an unmanaged {rule.provider} credential "
            "(a shadow non-human identity)."
        )
    return " ".join(parts)


def _where(location: Location, member: str | None) -> str:
    text = f" in archive member {member}, line {location.line}" if member is not None else ""
    if location.commit is not None:
        text += f", added in commit {location.commit[:12]}"
        if location.author is not None:
            text += f" by {location.author}"
        if location.date is not None:
            text += f" on {location.date}"
    return text


def split_archive(name: str) -> tuple[str, str | None]:
    """A scanned name as (the file on disk, the archive member or None): Tether names
    members `archive!member`, and a nested one `outer!inner!member`."""
    path, sep, member = name.partition("!")
    return (path, member) if sep and path and member else (name, None)


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def uri_of(path: str) -> str:
    """A file path as a SARIF artifact URI: relative paths (the norm: relative to what
    was scanned, which is the repository root for code scanning) as relative URI
    references with forward slashes, percent-encoded; absolute paths as file URIs."""
    if _DRIVE.match(path) or path.startswith("\\\\"):
        return PureWindowsPath(path).as_uri()
    path = relative_name(path)
    prefix = "file://" if path.startswith("/") else ""
    # quote() also encodes a colon, which in a first segment would read as a scheme.
    return prefix + urllib.parse.quote(path, safe="/")


def relative_name(path: str) -> str:
    """`path` with forward slashes and without a leading `./` (as a baseline compares)."""
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _first_sentence(text: str) -> str:
    sentence = text.split(". ", 1)[0].strip().rstrip(".")
    return sentence if len(sentence) <= 120 else sentence[:119].rstrip() + "…"


def _pascal(rule_id: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", rule_id))
