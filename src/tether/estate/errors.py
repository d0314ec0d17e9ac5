from __future__ import annotations

from dataclasses import dataclass

from tether.errors import TetherError

#: A refusal lists at most this many problems...
MAX_REPORTED = 100
#: ...and validation stops once it has found this many: one request, bounded work.
MAX_COUNTED = 1_000
#: A path or message longer than this is cut (a key can be as long as the request).
MAX_PROBLEM_CHARS = 512


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad field: where it is in the file and what is wrong with it."""

    path: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _clip(self.path))
        object.__setattr__(self, "message", _clip(self.message))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class EstateError(TetherError):
    code = "estate_error"


class EstateInvalid(EstateError):
    """The estate was refused; nothing was changed.

    `problems` names the bad fields, at most `MAX_REPORTED` of them; `count` is how many
    problems validation found (at most `MAX_COUNTED`), and `truncated` says validation
    stopped before it had checked everything: it reached `MAX_COUNTED`, or it did not look
    past the limit of a list or mapping that was over it. A document with schema problems
    is not checked for semantic ones (unknown references, bad durations): that is the
    ordinary two passes, not truncation.
    """

    status_code = 422
    code = "estate_invalid"

    def __init__(
        self, problems: list[Problem], count: int | None = None, truncated: bool = False
    ) -> None:
        found = len(problems) if count is None else max(count, len(problems))
        self.problems = problems[:MAX_REPORTED]
        self.count = min(found, MAX_COUNTED)
        self.truncated = truncated or found > MAX_COUNTED
        if self.count >= MAX_COUNTED and self.truncated:
            summary = f"{MAX_COUNTED} or more problems; the first {len(self.problems)} are listed"
        elif self.count > len(self.problems):
            summary = f"{self.count} problems; the first {len(self.problems)} are listed"
        else:
            shown = "; ".join(str(p) for p in self.problems[:5])
            more = f" (and {self.count - 5} more)" if self.count > 5 else ""
            summary = f"{shown}{more}"
        super().__init__(f"the estate is invalid: {summary}")
