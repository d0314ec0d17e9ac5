"""The errors of tether.authzen. Messages name fields, applications and roles, never the
properties or context a caller sent (they may carry anything)."""

from __future__ import annotations

from dataclasses import dataclass

from tether.errors import TetherError


class AuthzenError(TetherError):
    """An AuthZEN request could not be answered; the message says why."""

    code = "authzen_error"


class BadEvaluationRequest(AuthzenError):
    """The whole payload is malformed (AuthZEN: 400 Bad Request): a missing subject,
    action or resource, a field of the wrong type, a page token of another query."""

    status_code = 400
    code = "invalid_request"


class PdpForbidden(AuthzenError):
    """The caller's token does not name an application this PDP can evaluate against."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class ApplicationProblem:
    """One bad field of an estate's `applications`, by its path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ApplicationInvalid(AuthzenError):
    """An application does not validate (its entities or its Cedar policies)."""

    status_code = 422
    code = "application_invalid"

    def __init__(self, problems: list[ApplicationProblem]) -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"invalid application: {shown}{more}")
