"""The compiled policy set of the current estate view, swapped whole when the view is."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from tether.model import Policy
from tether.policy._engine import PolicyEngine

log = logging.getLogger("tether.policy")


class _WithPolicies(Protocol):
    """An estate view, as far as the holder reads it (policy/ does not import estate/)."""

    @property
    def policies(self) -> Sequence[Policy]: ...


class PolicyHolder:
    """The compiled policy set for the current estate view; None when it failed to compile."""

    def __init__(self) -> None:
        self.engine: PolicyEngine | None = None
        self.error: str | None = None

    def update(self, view: _WithPolicies) -> None:
        try:
            self.engine, self.error = PolicyEngine.compile(view.policies), None
        except Exception as exc:  # fail closed: every decision denies until it compiles
            self.engine, self.error = None, f"the policy set failed to compile: {exc}"
            log.error("policy set failed to compile; denying everything")
