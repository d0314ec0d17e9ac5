"""Evaluating a request: guard rails in Python, then the estate's Cedar policies.

Fail closed (invariant 4): a guard rail, a Cedar deny, no decision, any evaluation
error, a malformed request or an empty policy set all give `allowed=False`. A request
is allowed only when Cedar says Allow *and* no policy failed to evaluate, because a
forbid that errors is skipped by Cedar and would otherwise fail open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from tether.model import Policy
from tether.policy._compile import (
    DEFAULT_POLICY_ID,
    ContextUsage,
    Statement,
    compile_policies,
    context_usage,
)
from tether.policy._guardrails import check
from tether.policy._request import Built, Decision, PolicyRequest, build
from tether.policy._schema import ACTION_TYPE, IDENTITY_TYPE, PROFILE_TYPE, schema_handle
from tether.policy._slice import ERRORED_POLICY, SliceKey, Slicer
from tether.policy.errors import PolicyInvalid

_ALLOW = cedarpy.Decision.Allow


def _deny(reason: str, error: str, context: Mapping[str, Any]) -> Decision:
    return Decision(False, (), (reason,), (error,), context)


@dataclass(frozen=True, slots=True)
class _Prepared:
    request: PolicyRequest
    built: Built
    cedar_request: dict[str, Any]

    @property
    def slice_key(self) -> SliceKey:
        built = self.built
        return (built.principal, built.resource, self.request.action, built.stable)


class PolicyEngine:
    """A compiled policy set: parsed and schema-validated once, evaluated many times.

    Thread-safe: the Cedar handles are immutable and the slice caches are locked.
    """

    __slots__ = ("_by_id", "_includes_default", "_slicer", "_statements", "_usage")

    def __init__(
        self,
        statements: tuple[Statement, ...],
        est: Mapping[str, Any],
        includes_default: bool,
        prefilter: bool = True,
    ) -> None:
        self._statements = statements
        self._by_id = {s.id: s for s in statements}
        self._includes_default = includes_default
        self._usage: ContextUsage = context_usage(est.values())
        self._slicer = Slicer(est, schema_handle(), prefilter)

    @classmethod
    def compile(
        cls, policies: Sequence[Policy], *, include_default: bool = True, prefilter: bool = True
    ) -> PolicyEngine:
        """Parse and validate `policies`; raise PolicyInvalid naming each bad policy.

        With `include_default` (the server's setting) Tether's default policy
        `tether:default` is added: an attested, entitled request is permitted unless a
        policy forbids it. Without it the set is evaluated as written, and an empty set
        permits nothing. `prefilter=False` evaluates every statement on every request
        instead of a slice (slower; the decisions are the same).
        """
        compiled, problems = compile_policies(policies, include_default)
        if problems:
            raise PolicyInvalid(problems)
        return cls(compiled.statements, compiled.est, include_default, prefilter)

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """The id of every statement in the set, the default policy's included."""
        return tuple(s.id for s in self._statements)

    def __len__(self) -> int:
        return len(self._statements)

    def evaluate(self, request: PolicyRequest) -> Decision:
        """Decide one request. Never raises on a bad request: it is denied, with errors."""
        prepared = self._prepare(request)
        if isinstance(prepared, Decision):
            return prepared
        return self._run([prepared])[0]

    def evaluate_many(self, requests: Sequence[PolicyRequest]) -> list[Decision]:
        """Decide several requests; those sharing a slice go to Cedar in one call."""
        decisions: dict[int, Decision] = {}
        groups: dict[SliceKey, list[tuple[int, _Prepared]]] = {}
        for position, request in enumerate(requests):
            outcome = self._prepare(request)
            if isinstance(outcome, Decision):
                decisions[position] = outcome
            else:
                groups.setdefault(outcome.slice_key, []).append((position, outcome))
        for members in groups.values():
            outcomes = self._run([prepared for _, prepared in members])
            for (position, _), decision in zip(members, outcomes, strict=True):
                decisions[position] = decision
        return [decisions[position] for position in range(len(requests))]

    def _prepare(self, request: PolicyRequest) -> Decision | _Prepared:
        try:
            built = build(request, self._usage)
            violations = check(request)
        except Exception as exc:
            return _deny(
                "the request could not be evaluated; denied",
                f"invalid request: {type(exc).__name__}: {exc}",
                {},
            )
        if violations:
            return Decision(
                False,
                tuple(v.id for v in violations),
                tuple(v.reason for v in violations),
                (),
                built.context,
            )
        if not self._statements:
            return Decision(
                False, (), ("the policy set is empty, so nothing is permitted",), (), built.context
            )
        cedar_request = {
            "principal": {"type": IDENTITY_TYPE, "id": request.identity.id},
            "action": {"type": ACTION_TYPE, "id": request.action},
            "resource": {"type": PROFILE_TYPE, "id": request.profile.id},
        }
        return _Prepared(request, built, cedar_request)

    def _run(self, batch: Sequence[_Prepared]) -> list[Decision]:
        """Decide requests that share one slice key."""
        first = batch[0]
        try:
            piece = self._slicer.get(first.slice_key, lambda: first.built.cedar)
            # Without the schema: the context is built to it, the entities were checked
            # against it when the slice was built, and checking again costs ~30 µs.
            results = cedarpy.is_authorized_batch(
                [{**p.cedar_request, "context": p.built.cedar_json(piece.residual)} for p in batch],
                piece.policies,
                piece.entities,
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return [
                _deny("the policy engine failed; denied", error, p.built.context) for p in batch
            ]
        return [
            self._decide(p.request, result, p.built.context)
            for p, result in zip(batch, results, strict=True)
        ]

    def _decide(self, request: PolicyRequest, result: Any, context: dict[str, Any]) -> Decision:
        diagnostics = result.diagnostics
        determining = sorted(diagnostics.reasons)
        errors = tuple(diagnostics.errors)
        if result.decision is _ALLOW and not errors:
            return Decision(
                True, tuple(determining), tuple(self._say("permitted by", determining)), (), context
            )
        reasons: list[str] = []
        if result.decision is _ALLOW:
            # Cedar allowed because an erroring policy was skipped: fail closed, and name
            # the policies that could not be evaluated as the ones that decided.
            determining = sorted(
                {m.group(1) for e in errors if (m := ERRORED_POLICY.match(e)) is not None}
            )
        elif determining:
            reasons.extend(self._say("forbidden by", determining))
        elif not errors:
            reasons.append(self._nothing_permits(request))
        for error in errors:
            if ERRORED_POLICY.match(error):
                reasons.append(f"denied because a policy could not be evaluated: {error}")
            else:
                reasons.append(f"denied because the request could not be evaluated: {error}")
        return Decision(False, tuple(determining), tuple(reasons), errors, context)

    def _say(self, verb: str, ids: Sequence[str]) -> list[str]:
        out = []
        for policy_id in ids:
            statement = self._by_id.get(policy_id)
            why = statement.reason if statement is not None else None
            out.append(f"{verb} {policy_id}" + (f": {why}" if why else ""))
        return out

    def _nothing_permits(self, request: PolicyRequest) -> str:
        sentence = (
            f"no policy permits {request.action} of profile {request.profile.id} "
            f"for identity {request.identity.id}"
        )
        if self._includes_default and not request.attested:
            sentence += f" ({DEFAULT_POLICY_ID} permits only attested requests)"
        return sentence
