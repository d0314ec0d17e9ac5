from __future__ import annotations

from dataclasses import dataclass

from tether.errors import TetherError


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad field: where it is in the file and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class EstateError(TetherError):
    code = "estate_error"


class EstateInvalid(EstateError):
    """The estate was refused; nothing was changed. `problems` names every bad field."""

    status_code = 422
    code = "estate_invalid"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"the estate is invalid: {shown}{more}")
