"""Errors of target registration and of reading a kind's profile grants."""

from __future__ import annotations

from tether.errors import TetherError


class TargetError(TetherError):
    code = "target_error"


class InvalidTarget(TargetError):
    """A target (or its kind) cannot be registered or used as given. Not retryable."""

    status_code = 422
    code = "invalid_target"


class InvalidGrants(TargetError, ValueError):
    """A profile's `grants` cannot be read by its kind; nothing was created. Not retryable.

    The message starts with the field path inside the profile (`grants[1].privileges: ...`),
    so the estate can name the bad field."""

    status_code = 422
    code = "invalid_grants"
