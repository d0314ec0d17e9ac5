"""A request that failed validation, in Tether's words: each problem names its field
(`query.kind`, `roles[1]`) and says what is wrong as the estate's checks say it
("is required", "must be one of: ..."), not in the validation library's phrasing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tether._internal.fieldpath import field_path
from tether._internal.ids import SAFE_ID_PATTERN, SAFE_ID_RULE

#: Where a request's JSON body is named when the whole of it is the problem.
WHOLE_BODY = "(body)"

#: A pattern that is a plain choice, `^(a|b|c)$`: said as "must be one of: a, b, c".
_CHOICE = re.compile(r"^\^\(([\w-]+(?:\|[\w-]+)*)\)\$$")
#: The quoted values of pydantic's `expected` ("'a', 'b' or 'c'").
_QUOTED = re.compile(r"'([^']*)'")


def request_problems(
    errors: Iterable[Mapping[str, Any]], patterns: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """`{"path", "message"}` for each pydantic error of a request. `patterns` says in words
    what a regular expression the request's fields use means (say, a duration)."""
    return [
        {
            "path": field_path((p for p in e["loc"] if p != "body"), whole=WHOLE_BODY),
            "message": _message(e, patterns or {}),
        }
        for e in errors
    ]


def _one_of(values: Iterable[str]) -> str:
    return "must be one of: " + ", ".join(values)


def _pattern(pattern: str, patterns: Mapping[str, str]) -> str:
    if pattern in patterns:
        return patterns[pattern]
    if pattern == SAFE_ID_PATTERN:
        return f"is not a valid id: use {SAFE_ID_RULE}"
    choice = _CHOICE.match(pattern)
    if choice:
        return _one_of(choice.group(1).split("|"))
    return "contains characters or a form that is not allowed"


def _message(error: Mapping[str, Any], patterns: Mapping[str, str]) -> str:
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "missing" and not [p for p in error.get("loc", ()) if p != "body"]:
        return "is required: send a JSON object"
    messages: dict[str, Callable[[], str]] = {
        "missing": lambda: "is required",
        "extra_forbidden": lambda: "is not a known field",
        "enum": lambda: _one_of(_QUOTED.findall(str(ctx.get("expected", "")))),
        "literal_error": lambda: _one_of(_QUOTED.findall(str(ctx.get("expected", "")))),
        "string_pattern_mismatch": lambda: _pattern(str(ctx.get("pattern", "")), patterns),
        "string_too_long": lambda: f"is longer than {ctx.get('max_length')} characters",
        "string_too_short": lambda: (
            "must not be empty"
            if ctx.get("min_length") == 1
            else f"is shorter than {ctx.get('min_length')} characters"
        ),
        "too_long": lambda: f"has more than {ctx.get('max_length')} items",
        "too_short": lambda: f"needs at least {ctx.get('min_length')} item(s)",
        "greater_than_equal": lambda: f"must be at least {ctx.get('ge')}",
        "greater_than": lambda: f"must be more than {ctx.get('gt')}",
        "less_than_equal": lambda: f"must be at most {ctx.get('le')}",
        "less_than": lambda: f"must be less than {ctx.get('lt')}",
    }
    by_type = {
        "string": "a string",
        "int": "a whole number",
        "float": "a number",
        "bool": "true or false",
        "list": "a list",
        "tuple": "a list",
        "dict": "an object",
        "model": "an object",
        "model_attributes": "an object",
    }
    make = messages.get(kind)
    if make is not None:
        return make()
    for prefix, expected in by_type.items():
        if kind in (f"{prefix}_type", f"{prefix}_parsing"):
            return f"must be {expected}"
    if kind == "json_invalid":
        return "is not valid JSON"
    return "is not valid"
