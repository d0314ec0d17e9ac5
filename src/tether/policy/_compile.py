"""From estate policy files to one Cedar policy set with stable, readable ids.

A file may hold several Cedar statements. Each statement gets an id derived from the
file's id, so a decision names exactly which statement decided it:

- `<file>#<name>` for a statement annotated `@id("<name>")`;
- `<file>` when the file holds a single statement without `@id`;
- `<file>#<n>` otherwise, `n` counting statements in the file from 1.

An optional `@reason("...")` annotation is the human sentence shown when the statement
decides a request (in the OAuth `error_description` and the audit entry).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from tether.model import Policy
from tether.policy._schema import schema_handle
from tether.policy.errors import PolicyProblem

DEFAULT_POLICY_ID = "tether:default"
DEFAULT_POLICY_SOURCE = """\
@reason("the identity is attested and entitled to this profile")
permit (principal, action, resource) when { context.attested && context.entitled };
"""
#: Ids Tether gives its own rules; a user file may not take them.
RESERVED_PREFIXES = ("tether:", "guardrail:")

_CEDAR_POLICY_REF = re.compile(r"^for policy `policy\d+`, ")
# Strict validation checks a policy once per action it applies to, so one mistake can
# be reported three times, differing only in the action named.
_PER_ACTION = re.compile(r' for Tether::Action::"[a-z]+"')


@dataclass(frozen=True, slots=True)
class Statement:
    """One compiled Cedar statement, as decisions report it."""

    id: str
    file_id: str
    effect: str
    #: The `@reason` annotation, if the author gave one.
    reason: str | None


@dataclass(frozen=True, slots=True)
class Compiled:
    statements: tuple[Statement, ...]
    #: Cedar's JSON (EST) form of each statement, keyed by its id.
    est: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ContextUsage:
    """The context attributes (and claims) some statement reads; None: possibly all.

    Cedar parses every context attribute it is given, a microsecond or two each, so
    the engine passes only those a policy can read. Leaving out an attribute no
    statement mentions cannot change any evaluation.
    """

    attributes: frozenset[str] | None
    claims: frozenset[str] | None


_CONTEXT = {"Var": "context"}
_CLAIMS = {".": {"left": _CONTEXT, "attr": "claims"}}


def context_usage(bodies: Iterable[Any]) -> ContextUsage:
    attributes: set[str] = set()
    claims: set[str] = set()
    every_attribute = every_claim = False

    def visit(node: Any) -> None:
        nonlocal every_attribute, every_claim
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        if node == _CONTEXT:  # the whole record, e.g. `context == {...}`
            every_attribute = True
            return
        for op in (".", "has"):
            inner = node.get(op)
            if isinstance(inner, dict) and inner.keys() == {"left", "attr"}:
                if inner["left"] == _CONTEXT:
                    attributes.add(inner["attr"])
                    if inner["attr"] == "claims" and op == ".":
                        every_claim = True  # `context.claims` used as a whole record
                    return
                if inner["left"] == _CLAIMS:
                    attributes.add("claims")
                    claims.add(inner["attr"])
                    return
        for value in node.values():
            visit(value)

    for body in bodies:
        visit(body)
    return ContextUsage(
        None if every_attribute else frozenset(attributes),
        None if every_attribute or every_claim else frozenset(claims),
    )


def _clean(message: str) -> str:
    message = _CEDAR_POLICY_REF.sub("", message)
    message = _PER_ACTION.sub("", message)
    return message.removeprefix("Policy parse error: ")


def _statement_ids(file_id: str, bodies: list[dict[str, Any]]) -> list[str]:
    ids = []
    for n, body in enumerate(bodies, 1):
        name = body.get("annotations", {}).get("id")
        if name:
            ids.append(f"{file_id}#{name}")
        elif len(bodies) == 1:
            ids.append(file_id)
        else:
            ids.append(f"{file_id}#{n}")
    return ids


def _compile_one(
    index: int, policy: Policy, seen: set[str]
) -> tuple[Compiled, list[PolicyProblem]]:
    path = f"policies[{index}]"

    def problem(message: str) -> PolicyProblem:
        return PolicyProblem(path, f"{policy.id}: {message}", policy.id, index)

    empty = Compiled((), {})
    if policy.id.startswith(RESERVED_PREFIXES):
        return empty, [problem("ids starting with tether: or guardrail: are reserved")]
    try:
        document = json.loads(cedarpy.policies_to_json_str(policy.source))
    except ValueError as exc:
        return empty, [problem(f"cannot parse: {_clean(str(exc))}")]
    if document.get("templates"):
        return empty, [
            problem("templates (?principal or ?resource slots) are not supported; write the id")
        ]
    # Cedar numbers statements policy0, policy1, ... in file order; the JSON object's key
    # order is not something to rely on, the number is.
    keyed = sorted(document["staticPolicies"].items(), key=lambda kv: int(kv[0][len("policy") :]))
    bodies = [body for _, body in keyed]
    ids = _statement_ids(policy.id, bodies)
    cedar_to_ours = {cedar_id: ours for (cedar_id, _), ours in zip(keyed, ids, strict=True)}

    problems: list[PolicyProblem] = []
    for ours in ids:
        if ours in seen:
            problems.append(problem(f"policy id {ours!r} is used twice"))
        seen.add(ours)
    result = cedarpy.validate_policies(policy.source, schema_handle())
    reported: set[tuple[str, str]] = set()
    for error in result.errors:
        where = cedar_to_ours.get(error.policy_id, policy.id)
        message = _clean(error.error)
        if (where, message) not in reported:
            reported.add((where, message))
            problems.append(PolicyProblem(path, f"{where}: {message}", policy.id, index))
    if problems:
        return empty, problems
    statements = tuple(
        Statement(
            id=ours,
            file_id=policy.id,
            effect=str(body["effect"]),
            reason=_reason(body),
        )
        for ours, body in zip(ids, bodies, strict=True)
    )
    return Compiled(statements, dict(zip(ids, bodies, strict=True))), []


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("annotations", {}).get("reason")
    return str(reason) if reason else None


@functools.cache
def _default() -> Compiled:
    document = json.loads(cedarpy.policies_to_json_str(DEFAULT_POLICY_SOURCE))
    body = document["staticPolicies"]["policy0"]
    statement = Statement(DEFAULT_POLICY_ID, DEFAULT_POLICY_ID, "permit", _reason(body))
    return Compiled((statement,), {DEFAULT_POLICY_ID: body})


def compile_policies(
    policies: Sequence[Policy], include_default: bool
) -> tuple[Compiled, list[PolicyProblem]]:
    """Parse and validate every file; return the combined set or every problem found."""
    statements: list[Statement] = []
    est: dict[str, Any] = {}
    problems: list[PolicyProblem] = []
    seen: set[str] = set()
    for index, policy in enumerate(policies):
        compiled, found = _compile_one(index, policy, seen)
        problems.extend(found)
        statements.extend(compiled.statements)
        est.update(compiled.est)
    if include_default:
        default = _default()
        statements = [*default.statements, *statements]
        est = {**default.est, **est}
    return Compiled(tuple(statements), est), problems


def validate_policies(policies: Sequence[Policy]) -> list[PolicyProblem]:
    """Every problem with these policies (parse errors, schema violations), none if valid.

    Each problem's path is `policies[i]`, i the index in `policies`, and its message
    starts with the id of the policy (or statement) at fault.
    """
    return compile_policies(policies, include_default=False)[1]
