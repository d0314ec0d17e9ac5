"""Pydantic's errors said in Tether's words, each naming its field."""

from __future__ import annotations

import enum
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether._internal.ids import SAFE_ID_PATTERN
from tether._internal.problems import request_problems


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")
    color: Color = Color.RED
    state: str = Field(default="on", pattern="^(on|off)$")
    mode: Literal["fast", "slow"] = "fast"
    id: str = Field(default="a", pattern=SAFE_ID_PATTERN, max_length=8)
    name: str = Field(default="n", min_length=1)
    count: int = Field(default=1, ge=1, le=5)
    tags: list[str] = Field(default=["t"], min_length=1, max_length=2)
    flag: bool = False
    ttl: str = Field(default="1h", pattern=r"^[0-9]+[smh]$")
    required: str


def problems(document: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(document)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()]
    found = request_problems(errors, {r"^[0-9]+[smh]$": "must be a duration"})
    return {p["path"]: p["message"] for p in found}


def test_each_field_is_named_and_said_in_tethers_words() -> None:
    said = problems(
        {
            "color": "green",
            "state": "maybe",
            "mode": "medium",
            "id": "a..b",
            "name": "",
            "count": 9,
            "tags": ["a", "b", "c"],
            "flag": "perhaps",
            "ttl": "1hour",
            "extra": 1,
        }
    )
    assert said == {
        "color": "must be one of: red, blue",
        "state": "must be one of: on, off",
        "mode": "must be one of: fast, slow",
        "id": said["id"],
        "name": "must not be empty",
        "count": "must be at most 5",
        "tags": "has more than 2 items",
        "flag": "must be true or false",
        "ttl": "must be a duration",
        "extra": "is not a known field",
        "required": "is required",
    }
    assert said["id"].startswith("is not a valid id: use 1 to 128 ASCII letters")


def test_types_and_lower_bounds() -> None:
    said = problems({"count": "x", "tags": [], "required": 5, "name": 3})
    assert said == {
        "count": "must be a whole number",
        "tags": "needs at least 1 item(s)",
        "required": "must be a string",
        "name": "must be a string",
    }


def test_a_missing_body_says_what_to_send() -> None:
    [problem] = request_problems([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    assert problem == {"path": "(body)", "message": "is required: send a JSON object"}


def test_an_unknown_error_is_not_repeated_in_the_librarys_words() -> None:
    [problem] = request_problems([{"type": "uuid_parsing", "loc": ("query", "x"), "msg": "Bad"}])
    assert problem == {"path": "query.x", "message": "is not valid"}
