from __future__ import annotations

from dataclasses import dataclass

from tether.errors import TetherError


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One bad policy: where it was given, which policy it is, and Cedar's complaint.

    `path` is `policies[i]`, the index in the sequence that was compiled, so an estate
    can report it at the position of the file in its own `policies` list.
    """

    path: str
    message: str
    policy_id: str
    index: int

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class PolicyError(TetherError):
    code = "policy_error"


class PolicyInvalid(PolicyError):
    """A policy does not parse or does not validate against Tether's Cedar schema."""

    status_code = 422
    code = "policy_invalid"

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        shown = "; ".join(p.message for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"invalid policy: {shown}{more}")


class PolicyTestInvalid(PolicyError):
    """A `policy test` file is malformed; the message names the case and the field."""

    code = "policy_test_invalid"
