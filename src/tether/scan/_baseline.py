"""A baseline: findings already known, which `tether scan --baseline FILE` does not report
again. The file is a report an earlier scan wrote, as Tether's JSON or as SARIF.

A finding is known by its rule, its fingerprint and its file, not its line: a secret
that moves within a file is still the same finding, while the same secret committed to
another file is new. Fingerprints are keyed, so a baseline holds for scans with the same
key (the server's, or this machine's local one).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tether.scan._model import ScanFinding
from tether.scan._sarif import FINGERPRINT_KEY, relative_name
from tether.scan.errors import ScanError

__all__ = ["Baseline", "InvalidBaseline"]

_Key = tuple[str, str, str]


class InvalidBaseline(ScanError):
    """A baseline file that cannot be read or is not a Tether report. The message names
    the file and what is wrong, never a finding's content beyond its place in the file."""

    status_code = 422
    code = "invalid_baseline"


@dataclass(frozen=True, slots=True)
class Baseline:
    keys: frozenset[_Key]
    source: str = ""

    @classmethod
    def of(cls, findings: Iterable[ScanFinding], source: str = "") -> Baseline:
        return cls(
            frozenset(_key(f.rule, f.fingerprint, f.location.file) for f in findings), source
        )

    @classmethod
    def load(cls, path: str) -> Baseline:
        """Tether's JSON report (`{"findings": [...]}`) or a SARIF log from `to_sarif`.
        Raises `InvalidBaseline`."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise InvalidBaseline(f"baseline {path}: cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InvalidBaseline(f"baseline {path}: not UTF-8 text") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidBaseline(
                f"baseline {path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        try:
            if isinstance(document, dict) and "findings" in document:
                keys = _from_json(document["findings"])
            elif isinstance(document, dict) and "runs" in document:
                keys = _from_sarif(document)
            else:
                raise _Invalid('neither a Tether JSON report ({"findings": [...]}) nor a SARIF log')
        except _Invalid as exc:
            raise InvalidBaseline(f"baseline {path}: {exc}") from None
        return cls(frozenset(keys), path)

    def contains(self, finding: ScanFinding) -> bool:
        return _key(finding.rule, finding.fingerprint, finding.location.file) in self.keys

    def __len__(self) -> int:
        return len(self.keys)


class _Invalid(Exception):
    pass


def _key(rule: str, fingerprint: str, file: str) -> _Key:
    return (rule, fingerprint, relative_name(file))


def _from_json(findings: object) -> list[_Key]:
    if not isinstance(findings, list):
        raise _Invalid("findings: must be a list")
    keys: list[_Key] = []
    for index, entry in enumerate(findings):
        where = f"findings[{index}]"
        if not isinstance(entry, dict):
            raise _Invalid(f"{where}: must be an object")
        rule, fingerprint, file = (_text(entry, k, where) for k in ("rule", "fingerprint", "file"))
        keys.append(_key(rule, fingerprint, file))
    return keys


def _from_sarif(document: dict[str, Any]) -> list[_Key]:
    runs = document["runs"]
    if not isinstance(runs, list):
        raise _Invalid("runs: must be a list")
    keys: list[_Key] = []
    for run_index, run in enumerate(runs):
        where = f"runs[{run_index}]"
        if not isinstance(run, dict):
            raise _Invalid(f"{where}: must be an object")
        results = run.get("results") or []
        if not isinstance(results, list):
            raise _Invalid(f"{where}.results: must be a list")
        rule_ids = _rule_ids(run, where)
        for index, result in enumerate(results):
            keys.append(_sarif_key(result, rule_ids, f"{where}.results[{index}]"))
    return keys


def _rule_ids(run: dict[str, Any], where: str) -> list[str]:
    tool = run.get("tool")
    driver = tool.get("driver") if isinstance(tool, dict) else None
    rules = driver.get("rules", []) if isinstance(driver, dict) else []
    if not isinstance(rules, list):
        raise _Invalid(f"{where}.tool.driver.rules: must be a list")
    return [r.get("id", "") if isinstance(r, dict) else "" for r in rules]


def _sarif_key(result: object, rule_ids: list[str], where: str) -> _Key:
    if not isinstance(result, dict):
        raise _Invalid(f"{where}: must be an object")
    rule = result.get("ruleId")
    if not isinstance(rule, str):
        index = result.get("ruleIndex")
        if not isinstance(index, int) or not 0 <= index < len(rule_ids) or not rule_ids[index]:
            raise _Invalid(f"{where}: has no ruleId")
        rule = rule_ids[index]
    fingerprints = result.get("partialFingerprints")
    fingerprint = fingerprints.get(FINGERPRINT_KEY) if isinstance(fingerprints, dict) else None
    if not isinstance(fingerprint, str):
        raise _Invalid(
            f"{where}: has no {FINGERPRINT_KEY} partial fingerprint (not written by Tether?)"
        )
    return _key(rule, fingerprint, _sarif_file(result, where))


def _sarif_file(result: dict[str, Any], where: str) -> str:
    """The scanned name back from a result's location (see `_sarif.uri_of`)."""
    try:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    except (TypeError, KeyError, IndexError):
        uri = None
    if not isinstance(uri, str):
        raise _Invalid(f"{where}: has no locations[0].physicalLocation.artifactLocation.uri")
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in ("", "file"):
        raise _Invalid(f"{where}: artifact URI scheme {parsed.scheme!r} is not a file's")
    path = urllib.parse.unquote(parsed.path)
    if parsed.scheme == "file" and len(path) > 2 and path[0] == "/" and path[2] == ":":
        path = path[1:]  # file:///C:/x is C:/x
    properties = result.get("properties")
    member = properties.get("archiveMember") if isinstance(properties, dict) else None
    return f"{path}!{member}" if isinstance(member, str) else path


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{where}: {key}: " + ("missing" if value is None else "must be a string"))
    return value
