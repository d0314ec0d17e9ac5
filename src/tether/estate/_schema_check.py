"""The estate's JSON Schema, and validation against it that stops at a bound: errors are
drawn from the validator one at a time, the size limits of lists and mappings are checked
before their contents, and nothing past a limit is looked at."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from tether._internal.fieldpath import field_path
from tether._internal.ids import SAFE_ID_PATTERN, SAFE_ID_RULE
from tether.estate._schema import NOT_YET_IMPLEMENTED, Found, profile_providers, schema_for
from tether.estate.errors import MAX_COUNTED, Problem


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262, where a final `$` is the end of the text. In
    # Python it also matches before a trailing newline, so "team-a\n" would pass `^...$`.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


# -- keywords, bounded --
#
# jsonschema's own keywords put `repr(instance)` in every message (the whole list, for a
# list that is too long), look at every item of a list or key of a mapping however far
# past its limit, and collect every error of every `oneOf` branch. These do none of that.
# The messages are never shown: `_schema_problems` writes its own from the keyword.

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError]]
_STANDARD: dict[str, Keyword] = dict(jsonschema.Draft202012Validator.VALIDATORS)


def _limit(schema: dict[str, Any], keyword: str) -> int | None:
    value = schema.get(keyword)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _checked(size: int, schema: dict[str, Any], keyword: str) -> int:
    """How many of a list's items (a mapping's keys) to look at: all of them, unless there
    are more than the `maxItems` (`maxProperties`) limit allows. Then the refusal is
    certain and the first MAX_COUNTED are a sample enough to show what else is wrong:
    a list of a million items is refused for the cost of a thousand, valid or not."""
    limit = _limit(schema, keyword)
    return size if limit is None or size <= limit else min(limit, MAX_COUNTED)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    limit = _limit(schema, "maxLength")
    if limit is not None and len(instance) > limit:
        return  # `maxLength` refuses it; a megabyte is not worth matching
    if not _compiled(pattern).search(instance):
        yield ValidationError("does not match the pattern")


def _type(
    validator: Any, types: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    wanted = types if isinstance(types, list) else [types]
    if not any(validator.is_type(instance, t) for t in wanted):
        yield ValidationError("is not of the type")


def _max_items(
    validator: Any, limit: int, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "array") and len(instance) > limit:
        yield ValidationError("has too many items")


def _max_properties(
    validator: Any, limit: int, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "object") and len(instance) > limit:
        yield ValidationError("has too many entries")


def _items(
    validator: Any, items: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if "prefixItems" in schema or isinstance(items, bool):
        yield from _STANDARD["items"](validator, items, instance, schema)
        return
    if not validator.is_type(instance, "array"):
        return
    for index in range(_checked(len(instance), schema, "maxItems")):
        yield from validator.descend(instance=instance[index], schema=items, path=index)


def _keys(instance: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    return itertools.islice(instance, _checked(len(instance), schema, "maxProperties"))


def _property_names(
    validator: Any, names: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for key in _keys(instance, schema):
        yield from validator.descend(instance=key, schema=names)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if "patternProperties" in schema:
        yield from _STANDARD["additionalProperties"](validator, additional, instance, schema)
        return
    if not validator.is_type(instance, "object") or additional is True:
        return
    known = schema.get("properties", {})
    # One error per unknown key, lazily, at the key's own path (jsonschema makes one
    # error naming every unknown key, sorted: a million keys, one message).
    for key in _keys(instance, schema):
        if key in known:
            continue
        if additional is False:
            yield ValidationError("is not a known field", path=[key])
        else:
            yield from validator.descend(instance[key], additional, path=key)


def _one_of(
    validator: Any, branches: list[Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # As jsonschema's, but keeping at most MAX_COUNTED errors of each branch (and without
    # `repr` of the instance and of every branch in the messages).
    context: list[ValidationError] = []
    valid = [
        index
        for index, branch in enumerate(branches)
        if not _first_errors(validator.descend(instance, branch, schema_path=index), context)
    ]
    if not valid:
        yield ValidationError("is not valid under any of the accepted forms", context=context)
    elif len(valid) > 1:
        yield ValidationError("is valid under more than one of the accepted forms")


def _first_errors(errors: Iterator[ValidationError], into: list[ValidationError]) -> bool:
    """Add at most MAX_COUNTED of `errors` to `into`; whether there was any."""
    before = len(into)
    into.extend(itertools.islice(errors, MAX_COUNTED))
    return len(into) > before


_BOUNDED: dict[str, Keyword] = {
    "pattern": _pattern,
    "type": _type,
    "maxItems": _max_items,
    "maxProperties": _max_properties,
    "items": _items,
    "propertyNames": _property_names,
    "additionalProperties": _additional_properties,
    "oneOf": _one_of,
}
_EstateValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, _BOUNDED
)

#: Checked before anything else at the same place, so "has more than N items" is found
#: before the cap on problems is reached by the items themselves.
_SIZE_FIRST = ("type", "maxItems", "maxProperties")


def _size_first(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_size_first(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    first = {k: schema[k] for k in _SIZE_FIRST if k in schema}
    rest = {k: v for k, v in schema.items() if k not in first}
    return {k: _size_first(v) for k, v in {**first, **rest}.items()}


def _validator() -> Any:
    return _validator_for(profile_providers())


@functools.cache
def _validator_for(providers: tuple[str, ...]) -> Any:
    return _EstateValidator(_size_first(schema_for(providers)))


# -- from errors to problems --


def _too_many_items(limit: int) -> str:
    return f"has more than {limit} items"


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors to report for `error`: itself, or for a `oneOf`, those of the form the
    value has (say, an object), so a missing or unknown field inside it is named, not
    just the whole item."""
    if error.validator == "oneOf":
        inner = [e for e in error.context or () if e.validator != "type"]
        if inner:
            for e in inner:
                yield from _leaves(e)
            return
    yield error


def _skipped_some(error: ValidationError) -> bool:
    """Whether, past the limit this error reports, some contents were not checked."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "maxItems":
        return "items" in schema
    if error.validator == "maxProperties":
        return "propertyNames" in schema or isinstance(schema.get("additionalProperties"), dict)
    return False


def _schema_problems(error: ValidationError) -> list[Problem]:
    where = list(error.absolute_path)
    v = error.validator
    arg: Any = error.validator_value
    instance: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if v == "required":
        # One problem per missing field: several missing fields are several problems.
        missing = [name for name in arg if name not in instance] or [arg[0]]
        return [Problem(field_path([*where, name]), "is required") for name in missing]
    if v == "additionalProperties":  # the path already names the key
        return [Problem(field_path(where), "is not a known field")]
    if "propertyNames" in error.schema_path and isinstance(instance, str):
        return [Problem(field_path([*where, instance]), "is not an allowed key")]
    messages: dict[str, Callable[[], str]] = {
        "type": lambda: f"must be of type {arg}",
        "enum": lambda: _enum_message(where, arg, instance),
        "const": lambda: f"must be {arg!r}",
        "pattern": lambda: (
            f"is not a valid id: use {SAFE_ID_RULE}"
            if arg == SAFE_ID_PATTERN
            else schema.get("description") or "contains characters or a form that is not allowed"
        ),
        "maxLength": lambda: f"is longer than {arg} characters",
        "minLength": lambda: "must not be empty" if arg == 1 else f"is shorter than {arg}",
        "maxItems": lambda: _too_many_items(arg),
        "minItems": lambda: f"needs at least {arg} item(s)",
        "maxProperties": lambda: f"has more than {arg} entries",
        "propertyNames": lambda: "has a key that is not allowed",
        "oneOf": lambda: "is not in any of the accepted forms",
    }
    make = messages.get(str(v))
    return [Problem(field_path(where), make() if make else "is not valid")]


def _enum_message(where: list[Any], allowed: list[Any], instance: Any) -> str:
    if where[-1:] == ["provider"] and instance in NOT_YET_IMPLEMENTED:
        return f"{instance!r} is not implemented yet (supported: {', '.join(allowed)})"
    return "must be one of: " + ", ".join(str(x) for x in allowed)


def _sort_key(parts: Iterable[Any]) -> tuple[Any, ...]:
    # Ints (list indexes) and strs (keys) never meet at one place, but say so anyway.
    return tuple((isinstance(part, int), part) for part in parts)


def check_schema(document: Any, found: Found) -> None:
    schema = _validator().schema
    if isinstance(document, dict):
        # An oversized section is named first, whatever else is wrong before it.
        for name, section in schema["properties"].items():
            limit = _limit(section, "maxItems")
            value = document.get(name)
            if limit is not None and isinstance(value, list) and len(value) > limit:
                found.truncated = True
                found.add(Problem(name, _too_many_items(limit)), _sort_key([name]))
    for error in _validator().iter_errors(document):
        for leaf in _leaves(error):
            if _skipped_some(leaf):
                found.truncated = True
            key = _sort_key(leaf.absolute_path)
            for problem in _schema_problems(leaf):
                found.add(problem, key)
