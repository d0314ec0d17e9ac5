"""An application compiled once per estate version: its Cedar policy set and entity graph
parsed into handles, its entities indexed by type for search. Decisions are evaluated from
memory: nothing is read or written per decision.

Every type a policy names must be in the application's namespace (`Records::User`,
`Records::Action`), so one application's policies cannot be written against another's
types; without a schema to validate against, policies are parse-checked and scope-checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from tether.authzen._model import (
    IDENTIFIER,
    Application,
    Entity,
    Evaluation,
    Party,
    Verdict,
    cedar_value_problem,
)
from tether.authzen.errors import ApplicationInvalid, ApplicationProblem

_ALLOW = cedarpy.Decision.Allow
_ERRORED_POLICY = re.compile(r"^error while evaluating policy `(.+?)`: ")


@dataclass(frozen=True, slots=True)
class Statement:
    id: str
    effect: str
    reason: str | None


def _clean(message: str) -> str:
    return message.removeprefix("Policy parse error: ")


def _types_named(node: Any) -> Iterator[str]:
    """Every entity type an EST (Cedar's JSON form of a policy) names."""
    if isinstance(node, list):
        for item in node:
            yield from _types_named(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("entity", "__entity") and isinstance(value, dict) and "type" in value:
            yield str(value["type"])
        elif key == "entities" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "type" in item:
                    yield str(item["type"])
        elif key == "entity_type" and isinstance(value, str):
            yield value
        else:
            yield from _types_named(value)


def _scope_actions(body: Mapping[str, Any], action_type: str) -> Iterator[str]:
    scope = body.get("action", {})
    refs = [scope["entity"]] if "entity" in scope else list(scope.get("entities", []))
    for ref in refs:
        if isinstance(ref, dict) and ref.get("type") == action_type:
            yield str(ref["id"])


def _statements(
    where: str, app: Application
) -> tuple[dict[str, Any], list[Statement], set[str], list[ApplicationProblem]]:
    est: dict[str, Any] = {}
    statements: list[Statement] = []
    actions: set[str] = set()
    problems: list[ApplicationProblem] = []
    prefix = f"{app.namespace}::"
    action_type = f"{app.namespace}::Action"
    for j, policy in enumerate(app.policies):
        path = f"{where}.policies[{j}]"
        try:
            document = json.loads(cedarpy.policies_to_json_str(policy.source))
        except ValueError as exc:
            problems.append(
                ApplicationProblem(path, f"{policy.id}: cannot parse: {_clean(str(exc))}")
            )
            continue
        if document.get("templates"):
            problems.append(ApplicationProblem(path, f"{policy.id}: templates are not supported"))
            continue
        keyed = sorted(
            document["staticPolicies"].items(), key=lambda kv: int(kv[0][len("policy") :])
        )
        for n, (_cedar_id, body) in enumerate(keyed, 1):
            name = body.get("annotations", {}).get("id")
            ours = (
                f"{policy.id}#{name}"
                if name
                else (policy.id if len(keyed) == 1 else f"{policy.id}#{n}")
            )
            if ours in est:
                problems.append(ApplicationProblem(path, f"policy id {ours!r} is used twice"))
                continue
            for type_name in sorted(set(_types_named(body))):
                rest = type_name.removeprefix(prefix)
                if rest == type_name or not IDENTIFIER.fullmatch(rest):
                    problems.append(
                        ApplicationProblem(
                            path,
                            f"{ours}: type {type_name} is not in the application's namespace "
                            f"{app.namespace} (write {prefix}<Type>)",
                        )
                    )
            reason = body.get("annotations", {}).get("reason")
            statements.append(Statement(ours, str(body["effect"]), str(reason) if reason else None))
            actions.update(_scope_actions(body, action_type))
            est[ours] = body
    return est, statements, actions, problems


def _uid(namespace: str, type_: str, id_: str) -> dict[str, str]:
    return {"type": f"{namespace}::{type_}", "id": id_}


def qualify(namespace: str, value: Any) -> Any:
    """Cedar's JSON form of a value, entity references in the application's namespace:
    `{"__entity": {"type": "User", "id": "bob"}}` means `<namespace>::User::"bob"`."""
    if isinstance(value, list):
        return [qualify(namespace, v) for v in value]
    if not isinstance(value, dict):
        return value
    ref = value.get("__entity")
    if len(value) == 1 and isinstance(ref, dict) and isinstance(ref.get("type"), str):
        if "::" not in ref["type"]:
            return {"__entity": {**ref, "type": f"{namespace}::{ref['type']}"}}
        return value
    return {k: qualify(namespace, v) for k, v in value.items()}


def _entity_json(namespace: str, entity: Entity, attrs: Mapping[str, Any] | None = None) -> str:
    return json.dumps(
        {
            "uid": _uid(namespace, entity.type, entity.id),
            "attrs": qualify(namespace, dict(entity.attrs if attrs is None else attrs)),
            "parents": [_uid(namespace, p.type, p.id) for p in entity.parents],
        }
    )


def compile_problems(where: str, app: Application) -> list[ApplicationProblem]:
    """The problems compiling `app` finds (its policies, its entity graph); [] if none."""
    try:
        CompiledApplication.compile(app, where)
    except ApplicationInvalid as exc:
        return exc.problems
    return []


class CompiledApplication:
    """An application ready to decide: immutable, thread-safe."""

    __slots__ = (
        "_by_id",
        "_entities",
        "_texts",
        "actions",
        "application",
        "by_type",
        "declared",
        "namespace",
        "policies",
        "statements",
    )

    def __init__(
        self,
        app: Application,
        est: Mapping[str, Any],
        statements: Sequence[Statement],
        actions: set[str],
    ) -> None:
        self.application = app
        self.namespace = app.namespace
        self.statements = tuple(statements)
        self._by_id = {s.id: s for s in statements}
        self.policies = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": dict(est), "templates": {}, "templateLinks": []})
        )
        self.declared: dict[tuple[str, str], Entity] = {(e.type, e.id): e for e in app.entities}
        self._texts: dict[tuple[str, str], str] = {
            key: _entity_json(app.namespace, e) for key, e in self.declared.items()
        }
        self._entities = cedarpy.Entities.from_json_str("[" + ",".join(self._texts.values()) + "]")
        by_type: dict[str, list[str]] = {}
        for entity in app.entities:
            by_type.setdefault(entity.type, []).append(entity.id)
        self.by_type = {t: tuple(sorted(ids)) for t, ids in by_type.items()}
        self.actions = tuple(sorted(set(app.actions) | actions))

    @classmethod
    def compile(cls, app: Application, where: str = "application") -> CompiledApplication:
        est, statements, actions, problems = _statements(where, app)
        if problems:
            raise ApplicationInvalid(problems)
        try:
            return cls(app, est, statements, actions)
        except ValueError as exc:
            raise ApplicationInvalid(
                [ApplicationProblem(f"{where}.entities", f"Cedar refuses the entities: {exc}")]
            ) from None

    @property
    def id(self) -> str:
        return self.application.id

    # -- deciding --
    def _check(self, evaluation: Evaluation) -> str | None:
        for name, party in (("subject", evaluation.subject), ("resource", evaluation.resource)):
            if not IDENTIFIER.fullmatch(party.type):
                return f"{name}.type {party.type!r} is not a type of application {self.id}"
            for key, value in party.properties.items():
                problem = cedar_value_problem(value)
                if problem:
                    return f"{name}.properties.{key}: {problem}"
        for key, value in evaluation.context.items():
            problem = cedar_value_problem(value)
            if problem:
                return f"context.{key}: {problem}"
        return None

    def _entities_for(self, parties: Sequence[Party]) -> Any:
        """The entity graph of a request: the declared one, with the properties of its
        subject and resource added to their attributes (declared attributes win), and an
        undeclared subject or resource existing with its properties alone."""
        changed: dict[tuple[str, str], str] = {}
        for party in parties:
            key = (party.type, party.id)
            if not party.properties:
                continue
            entity = self.declared.get(key)
            if entity is None:
                entity = Entity(party.type, party.id)
            changed[key] = _entity_json(
                self.namespace, entity, {**party.properties, **entity.attrs}
            )
        if not changed:
            return self._entities
        texts = [text for key, text in self._texts.items() if key not in changed]
        return "[" + ",".join([*texts, *changed.values()]) + "]"

    def _request(
        self, subject: Party, action: str, resource: Party, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "principal": _uid(self.namespace, subject.type, subject.id),
            "action": _uid(self.namespace, "Action", action),
            "resource": _uid(self.namespace, resource.type, resource.id),
            "context": json.dumps(qualify(self.namespace, dict(context))),
        }

    def evaluate_many(self, evaluations: Sequence[Evaluation]) -> list[Verdict]:
        """Decide each evaluation; requests sharing an entity graph go to Cedar together.
        Never raises: a request that cannot be evaluated is denied, with the reason."""
        out: dict[int, Verdict] = {}
        groups: dict[int, tuple[Any, list[tuple[int, dict[str, Any]]]]] = {}
        keys: dict[Any, int] = {}
        graphs: dict[tuple[Any, ...], Any] = {}
        for position, evaluation in enumerate(evaluations):
            problem = self._check(evaluation)
            if problem is not None:
                out[position] = Verdict(False, (), (f"denied: {problem}",), (problem,))
                continue
            parties = (evaluation.subject, evaluation.resource)
            memo = tuple(
                (p.type, p.id, json.dumps(p.properties, sort_keys=True))
                for p in parties
                if p.properties
            )
            entities = graphs.get(memo)
            if entities is None:
                entities = graphs[memo] = self._entities_for(parties)
            key = id(entities) if entities is self._entities else entities
            group = keys.setdefault(key, len(keys))
            request = self._request(
                evaluation.subject, evaluation.action.name, evaluation.resource, evaluation.context
            )
            groups.setdefault(group, (entities, []))[1].append((position, request))
        for entities, members in groups.values():
            for (position, _), verdict in zip(
                members, self._run(entities, [r for _, r in members]), strict=True
            ):
                out[position] = verdict
        return [out[p] for p in range(len(evaluations))]

    def _run(self, entities: Any, requests: list[dict[str, Any]]) -> list[Verdict]:
        try:
            results = cedarpy.is_authorized_batch(requests, self.policies, entities)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return [Verdict(False, (), ("the policy engine failed; denied",), (error,))] * len(
                requests
            )
        return [self._verdict(r) for r in results]

    def _verdict(self, result: Any) -> Verdict:
        diagnostics = result.diagnostics
        determining = tuple(sorted(diagnostics.reasons))
        errors = tuple(diagnostics.errors)
        if result.decision is _ALLOW:
            failed_forbids = sorted(
                m.group(1)
                for e in errors
                if (m := _ERRORED_POLICY.match(e)) is not None
                and getattr(self._by_id.get(m.group(1)), "effect", "forbid") == "forbid"
            )
            if not failed_forbids and not (errors and not determining):
                # A permit that failed cannot have made this an allow: it stands.
                return Verdict(
                    True, determining, tuple(self._say("permitted by", determining)), errors
                )
            # A forbid that failed was skipped by Cedar: fail closed, naming it.
            return Verdict(
                False,
                tuple(failed_forbids),
                tuple(f"denied because {i} could not be evaluated" for i in failed_forbids)
                or ("denied because a policy could not be evaluated",),
                errors,
            )
        if determining:
            return Verdict(
                False, determining, tuple(self._say("forbidden by", determining)), errors
            )
        reason = (
            "no policy permits this request"
            if not errors
            else "denied because the request could not be evaluated"
        )
        return Verdict(False, (), (reason,), errors)

    def _say(self, verb: str, ids: Sequence[str]) -> list[str]:
        out = []
        for policy_id in ids:
            statement = self._by_id.get(policy_id)
            why = statement.reason if statement is not None else None
            out.append(f"{verb} {policy_id}" + (f": {why}" if why else ""))
        return out

    def candidates(self, kind: str, type_: str) -> Sequence[str]:
        """What a search of `kind` (subject, resource, action) looks through: the declared
        entities of `type_`, or every action the application knows."""
        if kind == "action":
            return self.actions
        return self.by_type.get(type_, ())
