"""Reading an estate file from disk: YAML to a JSON-able document, policy files inlined."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from tether._internal.fieldpath import field_path
from tether._internal.timeutil import format_time
from tether.estate.errors import MAX_COUNTED, EstateInvalid, Problem

MAX_FILE_BYTES = 32 * 1024 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: an alias bomb cannot expand into gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases are not allowed in an estate file",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # YAML says keys are unique; PyYAML would keep the last of two `owner:` lines.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


#: Where a value is, as (parent, key) links: built in constant time per value, turned
#: into a path only for a problem (a list per value would cost the depth, each time).
_Where = tuple[Any, Any] | None


def _parts(where: _Where) -> list[Any]:
    parts: list[Any] = []
    while where is not None:
        where, key = where
        parts.append(key)
    return parts[::-1]


class _Enough(Exception):
    """MAX_COUNTED problems found: stop looking."""


def _to_json(value: Any, where: _Where, problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json(v, (where, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v, (where, i), problems) for i, v in enumerate(value)]
    if isinstance(value, dt.datetime):
        # A timestamp without offset is left for validation to refuse, with its path.
        return format_time(value) if value.tzinfo else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float):
        return value
    # !!binary, !!set, !!omap ...: nothing JSON can carry to the server.
    problems.append(
        Problem(field_path(_parts(where)), f"a YAML {type(value).__name__} is not allowed here")
    )
    if len(problems) >= MAX_COUNTED:
        raise _Enough
    return None


def load_estate_text(text: str, source: str = "<estate>") -> Any:
    problems: list[Problem] = []
    try:
        document = _to_json(yaml.load(text, Loader=_NoAliasLoader), None, problems)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise EstateInvalid([Problem(where, str(problem))]) from None
    except RecursionError:
        raise EstateInvalid([Problem(source, "nested too deeply")]) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python will convert
        raise EstateInvalid([Problem(source, f"not a valid value: {exc}")]) from None
    except _Enough:
        raise EstateInvalid(problems, truncated=True) from None
    if problems:
        raise EstateInvalid(problems)
    return document


def load_estate_file(path: Path) -> Any:
    """The document to send to the server, with each listed Cedar file's text inlined."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise EstateInvalid([Problem(str(path), f"larger than {MAX_FILE_BYTES} bytes")])
    document = load_estate_text(path.read_text(encoding="utf-8"), str(path))
    if isinstance(document, dict) and isinstance(document.get("policies"), list):
        problems = []
        inlined: list[Any] = []
        for index, entry in enumerate(document["policies"]):
            if not isinstance(entry, str):
                inlined.append(entry)
                continue
            policy_path = (path.parent / entry).resolve()
            try:
                inlined.append({"id": entry, "source": policy_path.read_text(encoding="utf-8")})
            except OSError as exc:
                problems.append(
                    Problem(f"policies[{index}]", f"cannot read {entry}: {exc.strerror}")
                )
        if problems:
            raise EstateInvalid(problems)
        document["policies"] = inlined
    if isinstance(document, dict) and isinstance(document.get("applications"), list):
        _inline_application_policies(path, document["applications"])
    return document


def _inline_application_policies(path: Path, applications: list[Any]) -> None:
    """Each application's Cedar files, relative to the estate file, inlined as {id, source}."""
    problems = []
    for i, application in enumerate(applications):
        if not isinstance(application, dict) or not isinstance(application.get("policies"), list):
            continue
        inlined: list[Any] = []
        for j, entry in enumerate(application["policies"]):
            if not isinstance(entry, str):
                inlined.append(entry)
                continue
            try:
                source = (path.parent / entry).resolve().read_text(encoding="utf-8")
                inlined.append({"id": entry, "source": source})
            except OSError as exc:
                problems.append(
                    Problem(
                        f"applications[{i}].policies[{j}]", f"cannot read {entry}: {exc.strerror}"
                    )
                )
        application["policies"] = inlined
    if problems:
        raise EstateInvalid(problems)
