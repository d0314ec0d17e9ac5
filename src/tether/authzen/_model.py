"""Applications as an estate declares them, and AuthZEN's information model.

An application is a namespace of Cedar entity types with its own entities and policies:

    applications:
      - id: records                # a safe id; the PDP role is pdp:records
        namespace: Records         # Cedar namespace of its types and actions
        actions: [read, edit]      # optional: those the policies name are added
        entities:
          - {type: User, id: alice, attrs: {dept: eng}, parents: [{type: Role, id: admin}]}
        policies: [policies/records.cedar]
        audit: {summary_every: 1m, deny_samples: 10, permit_samples: 0}

`application_problems` checks the written form (every problem with its path, like
`applications[0].entities[3].parents[0].type`); `Application.from_spec` reads one that
passed. Nothing here imports Cedar: compiling is `tether.authzen._compile`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether._internal.ids import SAFE_ID_RULE, is_safe_id
from tether._internal.timeutil import InvalidValue, parse_duration
from tether.authzen.errors import ApplicationProblem
from tether.model import Policy

#: The application of Tether's own identities and profiles; no estate may declare it.
TETHER_APPLICATION = "tether"
#: A Cedar identifier, and a namespace (identifiers joined by `::`).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*")
MAX_ENTITIES = 10_000
MAX_PARENTS = 100
MAX_ACTIONS = 1_000
MAX_POLICIES = 100
MAX_ENTITY_ID = 1024
MAX_SAMPLES = 100
DEFAULT_SUMMARY_EVERY = dt.timedelta(minutes=1)
DEFAULT_DENY_SAMPLES = 10
_APPLICATION_KEYS = {"id", "namespace", "description", "actions", "entities", "policies", "audit"}
_ENTITY_KEYS = {"type", "id", "attrs", "parents"}
_AUDIT_KEYS = {"summary_every", "deny_samples", "permit_samples"}


@dataclass(frozen=True, slots=True)
class EntityRef:
    type: str
    id: str


@dataclass(frozen=True, slots=True)
class Entity:
    """A declared entity: its type within the application's namespace, id, attributes
    (JSON as written; Cedar reads lists as sets and objects as records) and parents."""

    type: str
    id: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    parents: tuple[EntityRef, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """How decisions are summarized in the audit log (see tether.authzen._audit)."""

    summary_every: dt.timedelta = DEFAULT_SUMMARY_EVERY
    deny_samples: int = DEFAULT_DENY_SAMPLES
    permit_samples: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> AuditSettings:
        spec = spec or {}
        every = spec.get("summary_every")
        return cls(
            summary_every=DEFAULT_SUMMARY_EVERY if every is None else parse_duration(every),
            deny_samples=int(spec.get("deny_samples", DEFAULT_DENY_SAMPLES)),
            permit_samples=int(spec.get("permit_samples", 0)),
        )


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    namespace: str
    entities: tuple[Entity, ...]
    policies: tuple[Policy, ...]
    actions: tuple[str, ...] = ()
    audit: AuditSettings = field(default_factory=AuditSettings)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Application:
        """An application whose spec passed `application_problems`."""
        return cls(
            id=str(spec["id"]),
            namespace=str(spec["namespace"]),
            entities=tuple(
                Entity(
                    type=str(e["type"]),
                    id=str(e["id"]),
                    attrs=dict(e.get("attrs", {})),
                    parents=tuple(
                        EntityRef(str(p["type"]), str(p["id"])) for p in e.get("parents", [])
                    ),
                )
                for e in spec.get("entities", [])
            ),
            policies=tuple(
                Policy(id=str(p["id"]), source=str(p["source"])) for p in spec.get("policies", [])
            ),
            actions=tuple(str(a) for a in spec.get("actions", [])),
            audit=AuditSettings.from_spec(spec.get("audit")),
        )


# -- AuthZEN's information model (the request as the core sees it) --


@dataclass(frozen=True, slots=True)
class Party:
    """A subject or a resource: type, id, and the properties the PEP passed."""

    type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evaluation:
    subject: Party
    action: Action
    resource: Party
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision: allowed or not, the policies that determined it, why, and errors.

    `context()` is AuthZEN's decision context: the reasons for an administrator
    (`reason_admin`), never properties, context or anything secret."""

    decision: bool
    policy_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    #: An HTTP-like status for an item that could not be evaluated (400: malformed).
    status: int | None = None

    def context(self) -> dict[str, Any]:
        admin: dict[str, Any] = {}
        if self.policy_ids:
            admin["policies"] = list(self.policy_ids)
        if self.reasons:
            admin["reasons"] = list(self.reasons)
        if self.errors:
            admin["errors"] = list(self.errors)
        out: dict[str, Any] = {"reason_admin": admin} if admin else {}
        if self.status is not None:
            out["error"] = {"status": self.status, "message": "; ".join(self.reasons)}
        return out

    def to_json(self) -> dict[str, Any]:
        context = self.context()
        return (
            {"decision": self.decision, "context": context}
            if context
            else {"decision": self.decision}
        )


def failed(status: int, message: str) -> Verdict:
    """An item that could not be evaluated: denied (fail closed), with the reason."""
    return Verdict(False, (), (message,), (), status)


# -- validating the written form --


class _Problems:
    def __init__(self) -> None:
        self.found: list[ApplicationProblem] = []

    def add(self, path: str, message: str) -> None:
        self.found.append(ApplicationProblem(path, message))


def _check_keys(where: str, spec: Mapping[str, Any], allowed: set[str], out: _Problems) -> None:
    for key in sorted(set(spec) - allowed):
        out.add(f"{where}.{key}", f"unknown field (one of: {', '.join(sorted(allowed))})")


def cedar_value_problem(value: Any, depth: int = 0) -> str | None:
    """Why a JSON value cannot be a Cedar attribute value, or None if it can."""
    if depth > 32:
        return "nested too deeply"
    if value is None:
        return "null is not a Cedar value (leave the attribute out)"
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else "integers are 64-bit in Cedar"
    if isinstance(value, float):
        return "numbers must be integers (Cedar has no floats)"
    if isinstance(value, list):
        for item in value:
            problem = cedar_value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for item in value.values():
            problem = cedar_value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"a {type(value).__name__} is not a Cedar value"


def _check_type(path: str, value: Any, out: _Problems) -> bool:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        out.add(path, "must be a Cedar type name (letters, digits, _; not starting with a digit)")
        return False
    return True


def _check_id(path: str, value: Any, out: _Problems) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ENTITY_ID:
        out.add(path, f"must be a string of 1 to {MAX_ENTITY_ID} characters")
        return False
    return True


def _declared(where: str, entities: list[Any], out: _Problems) -> dict[tuple[str, str], int]:
    """Each declared (type, id) and its position; a second declaration is a problem."""
    declared: dict[tuple[str, str], int] = {}
    for i, entity in enumerate(entities):
        if (
            isinstance(entity, dict)
            and isinstance(entity.get("type"), str)
            and isinstance(entity.get("id"), str)
        ):
            uid = (entity["type"], entity["id"])
            if uid in declared:
                out.add(
                    f"{where}[{i}].id", f'{uid[0]}::"{uid[1]}" is {where}[{declared[uid]}] already'
                )
            declared.setdefault(uid, i)
    return declared


def _check_entities(where: str, entities: Any, out: _Problems) -> None:
    if not isinstance(entities, list):
        out.add(where, "must be a list of entities")
        return
    if len(entities) > MAX_ENTITIES:
        out.add(where, f"at most {MAX_ENTITIES} entities per application")
        return
    declared = _declared(where, entities, out)
    for i, entity in enumerate(entities):
        path = f"{where}[{i}]"
        if not isinstance(entity, dict):
            out.add(path, "must be an object {type, id, attrs?, parents?}")
            continue
        _check_keys(path, entity, _ENTITY_KEYS, out)
        for name in ("type", "id"):
            if name not in entity:
                out.add(f"{path}.{name}", "is required")
        if "type" in entity:
            _check_type(f"{path}.type", entity["type"], out)
        if "id" in entity:
            _check_id(f"{path}.id", entity["id"], out)
        attrs = entity.get("attrs", {})
        if not isinstance(attrs, dict):
            out.add(f"{path}.attrs", "must be an object")
        else:
            for name, value in attrs.items():
                problem = cedar_value_problem(value)
                if problem:
                    out.add(f"{path}.attrs.{name}", problem)
        _check_parents(path, entity.get("parents", []), declared, out)


def _check_parents(
    path: str, parents: Any, declared: Mapping[tuple[str, str], int], out: _Problems
) -> None:
    if not isinstance(parents, list):
        out.add(f"{path}.parents", "must be a list of {type, id}")
        return
    if len(parents) > MAX_PARENTS:
        out.add(f"{path}.parents", f"at most {MAX_PARENTS} parents")
        return
    for j, parent in enumerate(parents):
        ppath = f"{path}.parents[{j}]"
        if not isinstance(parent, dict):
            out.add(ppath, "must be an object {type, id}")
            continue
        _check_keys(ppath, parent, {"type", "id"}, out)
        ok = True
        for name in ("type", "id"):
            if name not in parent:
                out.add(f"{ppath}.{name}", "is required")
                ok = False
        ok = ok and _check_type(f"{ppath}.type", parent["type"], out)
        ok = ok and _check_id(f"{ppath}.id", parent["id"], out)
        if ok and (parent["type"], parent["id"]) not in declared:
            out.add(ppath, f'no entity {parent["type"]}::"{parent["id"]}" is declared in entities')


def _check_audit(where: str, audit: Any, out: _Problems) -> None:
    if not isinstance(audit, dict):
        out.add(where, "must be an object {summary_every?, deny_samples?, permit_samples?}")
        return
    _check_keys(where, audit, _AUDIT_KEYS, out)
    if "summary_every" in audit:
        try:
            every = parse_duration(audit["summary_every"])
            if every < dt.timedelta(seconds=1):
                out.add(f"{where}.summary_every", "must be at least 1s")
        except (InvalidValue, TypeError) as exc:
            out.add(f"{where}.summary_every", str(exc))
    for name in ("deny_samples", "permit_samples"):
        value = audit.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAMPLES:
            out.add(f"{where}.{name}", f"must be an integer from 0 to {MAX_SAMPLES}")


def _check_actions(where: str, actions: Any, out: _Problems) -> None:
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        out.add(where, f"must be a list of at most {MAX_ACTIONS} action names")
        return
    for j, name in enumerate(actions):
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_ENTITY_ID:
            out.add(f"{where}[{j}]", f"must be a string of 1 to {MAX_ENTITY_ID} characters")
        elif name in actions[:j]:
            out.add(f"{where}[{j}]", f"{name!r} is listed twice")


def _check_policies(where: str, policies: Any, out: _Problems) -> None:
    if not isinstance(policies, list) or len(policies) > MAX_POLICIES:
        out.add(where, f"must be a list of at most {MAX_POLICIES} Cedar files")
        return
    seen: set[str] = set()
    for j, entry in enumerate(policies):
        path = f"{where}[{j}]"
        if isinstance(entry, str):
            out.add(path, f"the content of {entry!r} was not sent (use `tether apply -f`)")
        elif (
            not isinstance(entry, dict)
            or set(entry) != {"id", "source"}
            or not all(isinstance(entry[k], str) for k in ("id", "source"))
        ):
            out.add(
                path, "must be a Cedar file's path (inlined by `tether apply -f` as {id, source})"
            )
        elif entry["id"] in seen:
            out.add(path, f"{entry['id']} is listed twice")
        else:
            seen.add(entry["id"])


def _check_one(where: str, spec: Any, out: _Problems) -> None:
    if not isinstance(spec, dict):
        out.add(where, "must be an object {id, namespace, entities?, policies?, actions?, audit?}")
        return
    _check_keys(where, spec, _APPLICATION_KEYS, out)
    app_id = spec.get("id")
    if app_id is None:
        out.add(f"{where}.id", "is required")
    elif not is_safe_id(app_id):
        out.add(f"{where}.id", f"must be {SAFE_ID_RULE}")
    elif app_id == TETHER_APPLICATION:
        out.add(f"{where}.id", "tether is Tether's own application (its identities and profiles)")
    namespace = spec.get("namespace")
    if namespace is None:
        out.add(f"{where}.namespace", "is required")
    elif not isinstance(namespace, str) or not NAMESPACE.fullmatch(namespace):
        out.add(f"{where}.namespace", "must be a Cedar namespace such as Records or Acme::Records")
    if "description" in spec and not isinstance(spec["description"], str):
        out.add(f"{where}.description", "must be a string")
    _check_actions(f"{where}.actions", spec.get("actions", []), out)
    _check_entities(f"{where}.entities", spec.get("entities", []), out)
    _check_policies(f"{where}.policies", spec.get("policies", []), out)
    if "audit" in spec:
        _check_audit(f"{where}.audit", spec["audit"], out)


def application_problems(specs: Any, where: str = "applications") -> list[ApplicationProblem]:
    """Every problem with an estate's `applications` as written, Cedar policies included
    (parsed, under the application's namespace): none when it is valid."""
    out = _Problems()
    if not isinstance(specs, list):
        out.add(where, "must be a list of applications")
        return out.found
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        path = f"{where}[{i}]"
        before = len(out.found)
        _check_one(path, spec, out)
        if isinstance(spec, dict) and isinstance(spec.get("id"), str):
            if spec["id"] in seen:
                out.add(f"{path}.id", f"duplicate id {spec['id']!r}")
            seen.setdefault(spec["id"], i)
        if len(out.found) == before:
            from tether.authzen._compile import compile_problems

            out.found.extend(compile_problems(path, Application.from_spec(spec)))
    return out.found


def parse_applications(specs: Sequence[Mapping[str, Any]]) -> tuple[Application, ...]:
    return tuple(Application.from_spec(s) for s in specs)
