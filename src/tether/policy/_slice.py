"""Policy slices: the policy set specialized, by Cedar, to one principal, resource and action.

Cedar evaluates every statement of a set on every request, about half a microsecond
each here, and parses every context attribute it is given, a microsecond or two each;
200 policies evaluated as written would exceed the decision budget (design.md §6).

A slice is computed once per (principal, resource, action, stable context) by Cedar's
partial evaluation, with the volatile context (time, TTL, task, intent, source IP,
per-run claims) unknown. Cedar returns each statement's *residual*: the statement with
everything known folded in. The slice keeps

- nothing of a statement whose residual is `false` (it cannot be satisfied or fail);
- the residual of every other statement, its unknowns turned back into reads of the
  context (`unknown("context.intent")` becomes `context.intent`), except residuals that
  are a conjunction with a literal `false` preceded only by operations that cannot fail
  (comparisons, `like`, set and IP tests): those are false whatever the context is.

Per request Cedar then parses only the volatile attributes and evaluates a handful of
small residuals. Partial evaluation is sound (substituting the unknowns in a residual
gives the result of evaluating the original), so decisions, reasons and errors are
those of the whole set. Where that cannot be relied on here (a statement that failed
during partial evaluation, a residual reading the whole context record, Cedar refusing
the request), the slice keeps the original statements and the full context instead.

Building a slice costs milliseconds, so a slice is built only when its key is seen a
second time; a one-off request is evaluated against the whole set. Slices and residual
policy sets are kept in bounded LRU caches.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cedarpy

from tether.policy._request import partial_context
from tether.policy._schema import ACTION_TYPE, IDENTITY_TYPE, PROFILE_TYPE

K = TypeVar("K")
V = TypeVar("V")

ERRORED_POLICY = re.compile(r"^error while evaluating policy `(.+?)`: ")
#: Slices kept per engine: one per (identity, profile, action, stable context) in use.
SLICE_CACHE_SIZE = 8192
#: Residual policy sets, shared by every slice that reduces to the same residuals.
SET_CACHE_SIZE = 1024

SliceKey = tuple[str, str, str, tuple[Any, ...]]

_CONTEXT = {"Var": "context"}
# Operations that cannot fail on well-typed operands. The policies were validated
# against the schema and the context is built to it, so operands are well typed.
_TOTAL = frozenset(
    {"!", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "if-then-else", "Set", "Record"}
    | {"contains", "containsAll", "containsAny", "isEmpty"}
    | {"isIpv4", "isIpv6", "isLoopback", "isMulticast", "isInRange"}
    | {"lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"}
)
# Constructors fail only on a bad literal, which validation already refused.
_CONSTRUCTORS = frozenset({"ip", "decimal", "datetime", "duration"})


class LRU(Generic[K, V]):
    """A small thread-safe LRU map; the server decides from many threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class Slice:
    """What Cedar needs for requests sharing a key, built once and reused."""

    policies: Any  # cedarpy.PolicySet
    entities: Any  # cedarpy.Entities: the principal and the resource, schema-checked
    #: The policies are residuals: give Cedar the volatile context attributes only.
    residual: bool
    statements: int


def policy_set_of(est: Mapping[str, Any]) -> Any:
    """A Cedar policy set built from JSON, so each statement keeps the id we gave it."""
    return _policy_set_from_json(_set_json(est))


def _set_json(est: Mapping[str, Any]) -> str:
    return json.dumps({"staticPolicies": dict(est), "templates": {}, "templateLinks": []})


def _policy_set_from_json(text: str) -> Any:
    return cedarpy.PolicySet.from_json_str(text)


def _uid(type_: str, id_: str) -> str:
    """An entity uid in Cedar syntax, as partial evaluation takes it."""
    escaped = "".join(
        "\\" + ch if ch in '"\\' else (ch if ch.isprintable() else f"\\u{{{ord(ch):x}}}")
        for ch in id_
    )
    return f'{type_}::"{escaped}"'


class _NotReusable(Exception):
    """A residual that cannot stand in for its statement; keep the original instead."""


def _read_back(node: Any) -> Any:
    """The residual with each `unknown("context.a.b")` turned into `context.a.b`."""
    if isinstance(node, list):
        return [_read_back(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node == _CONTEXT:
        # The whole context record: in a residual slice it would be the volatile part only.
        raise _NotReusable
    if node.keys() == {"unknown"}:
        name = node["unknown"][0]["Value"]
        parts = name.split(".")
        if parts[0] != "context" or len(parts) < 2:
            raise _NotReusable
        out: Any = _CONTEXT
        for part in parts[1:]:
            out = {".": {"left": out, "attr": part}}
        return out
    if node.keys() == {"Value"}:
        return node
    return {key: _read_back(value) for key, value in node.items()}


def _cannot_fail(node: Any) -> bool:
    """True if evaluating this (read-back) residual expression cannot raise an error."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    ((op, body),) = node.items()
    if op == "Value":
        return True
    if op == ".":
        # Reading the context: the attribute is there, its presence is in the slice key.
        left = body["left"]
        return left == _CONTEXT or (isinstance(left, dict) and "." in left and _cannot_fail(left))
    if op == "like":
        return _cannot_fail(body["left"])
    if op in _CONSTRUCTORS:
        return all(isinstance(a, dict) and a.keys() == {"Value"} for a in body)
    if op not in _TOTAL:
        return False
    children = body if isinstance(body, list) else list(body.values())
    return all(_cannot_fail(child) for child in children)


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, dict) and node.keys() == {"&&"}:
        return _conjuncts(node["&&"]["left"]) + _conjuncts(node["&&"]["right"])
    return [node]


def _never_true(residual: Mapping[str, Any]) -> bool:
    """A conjunction reaching a literal `false` through steps that cannot fail."""
    conditions = residual.get("conditions", [])
    if len(conditions) != 1 or conditions[0].get("kind") != "when":
        return False
    for conjunct in _conjuncts(conditions[0]["body"]):
        if conjunct == {"Value": False}:
            return True
        if not _cannot_fail(conjunct):
            return False
    return False


class Slicer:
    """Finds, builds and caches the slice each request is evaluated against."""

    def __init__(self, est: Mapping[str, Any], schema: Any, prefilter: bool) -> None:
        self._est = dict(est)
        self._schema = schema
        self._prefilter = prefilter
        self.full = policy_set_of(self._est)
        self._slices: LRU[SliceKey, Slice] = LRU(SLICE_CACHE_SIZE)
        self._seen: LRU[SliceKey, bool] = LRU(SLICE_CACHE_SIZE)
        self._sets: LRU[bytes, Any] = LRU(SET_CACHE_SIZE)

    def get(self, key: SliceKey, cedar_context: Callable[[], Mapping[str, Any]]) -> Slice:
        """The slice for `key`; `cedar_context` gives a request's context if one is built."""
        piece = self._slices.get(key)
        if piece is not None:
            return piece
        principal, resource, action, _ = key
        entities = cedarpy.Entities.from_json_str(f"[{principal},{resource}]", self._schema)
        whole = Slice(self.full, entities, False, len(self._est))
        if not self._prefilter:
            piece = whole
        elif self._seen.get(key) is None:
            self._seen.put(key, True)
            return whole
        else:
            piece = self._specialize(entities, principal, action, resource, cedar_context())
            piece = piece or whole
        self._slices.put(key, piece)
        return piece

    def _specialize(
        self,
        entities: Any,
        principal: str,
        action: str,
        resource: str,
        cedar_context: Mapping[str, Any],
    ) -> Slice | None:
        """The residual slice, or the original statements that can matter; None: all."""
        try:
            result = cedarpy.is_authorized_partial(
                {
                    "principal": _uid(IDENTITY_TYPE, json.loads(principal)["uid"]["id"]),
                    "action": _uid(ACTION_TYPE, action),
                    "resource": _uid(PROFILE_TYPE, json.loads(resource)["uid"]["id"]),
                    "context": json.dumps(partial_context(cedar_context)),
                },
                self.full,
                entities,
            )
            diagnostics = result.diagnostics
            keep = set(diagnostics.nontrivial_residuals) | set(diagnostics.reasons)
            failed = set()
            for error in diagnostics.errors:
                match = ERRORED_POLICY.match(error)
                if match is None:
                    return None  # Cedar could not take the request as given
                failed.add(match.group(1))
            residuals: dict[str, Any] = result.residuals
        except Exception:
            return None
        if not (keep | failed) <= self._est.keys():
            return None
        if not failed:
            try:
                est = {i: _read_back(residuals[i]) for i in sorted(keep)}
            except (_NotReusable, KeyError, IndexError, TypeError):
                pass
            else:
                est = {i: body for i, body in est.items() if not _never_true(body)}
                return Slice(self._set(est), entities, True, len(est))
        # A statement failed on what is known: its residual would hide the failure, so
        # the original statements are evaluated, against the full context.
        originals = {i: self._est[i] for i in sorted(keep | failed)}
        return Slice(self._set(originals), entities, False, len(originals))

    def _set(self, est: Mapping[str, Any]) -> Any:
        text = _set_json(est)
        # Keyed by digest: the text of a large set would make a large key.
        digest = hashlib.sha256(text.encode()).digest()
        policies = self._sets.get(digest)
        if policies is None:
            policies = _policy_set_from_json(text)
            self._sets.put(digest, policies)
        return policies
