"""The estate's JSON Schema and the problems found against it, without the validator
(tether.estate._schema_check, which loads jsonschema only when a document is checked)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from tether.estate.errors import MAX_COUNTED, EstateInvalid, Problem
from tether.policy import KEY_PROVIDER
from tether.providers import LOCAL_PROVIDERS
from tether.targets import kind_names

#: Providers the design names that nothing implements yet: a profile naming one is refused
#: as "not implemented yet" rather than as a typo (a later issue brings the SVIDs).
NOT_YET_IMPLEMENTED = ("static",)


def profile_providers() -> tuple[str, ...]:
    """What a profile's `provider` may be: an in-process provider or a target kind."""
    return (*LOCAL_PROVIDERS, KEY_PROVIDER, *kind_names())


def estate_schema() -> dict[str, Any]:
    """The published JSON Schema of the estate file. The profile providers it allows are
    filled in from the providers and the registry of target kinds, never listed twice."""
    return schema_for(profile_providers())


@functools.cache
def schema_for(providers: tuple[str, ...]) -> dict[str, Any]:
    # Keyed by the providers, so a kind registered later (a plug-in) is accepted too.
    text = resources.files("tether.estate").joinpath("estate.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    schema["properties"]["profiles"]["items"]["properties"]["provider"]["enum"] = list(providers)
    return schema


class Enough(Exception):
    """MAX_COUNTED problems found: stop looking."""


class Found:
    """The problems found so far, each once, up to MAX_COUNTED."""

    def __init__(self) -> None:
        #: Each problem, in the order found, with the key that orders schema problems by path.
        self.found: dict[Problem, tuple[Any, ...]] = {}
        self.truncated = False

    def add(self, problem: Problem, key: tuple[Any, ...] = ()) -> None:
        self.found.setdefault(problem, key)
        if len(self.found) >= MAX_COUNTED:
            self.truncated = True
            raise Enough

    def refusal(self, by_path: bool) -> EstateInvalid:
        problems = list(self.found)
        if by_path:  # stable: problems of one error keep their order
            problems.sort(key=lambda p: self.found[p])
        return EstateInvalid(problems, count=len(problems), truncated=self.truncated)
