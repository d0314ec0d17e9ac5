"""The errors of tether.govern. Messages name fields and ids, never secret values."""

from __future__ import annotations

from tether.errors import ConflictError, NotFoundError, TetherError


class GovernError(TetherError):
    code = "govern_error"


class InvalidUsage(GovernError):
    """A usage record that cannot be taken (POST /v1/usage): the message names the field."""

    status_code = 422
    code = "invalid_usage"


class InvalidReview(GovernError):
    status_code = 422
    code = "invalid_review"


class InvalidException(GovernError):
    status_code = 422
    code = "invalid_exception"


class NotReviewer(GovernError):
    """The caller may not decide this item (it is not the identity's owner or an admin)."""

    status_code = 403
    code = "not_reviewer"


class UnknownGovernObject(NotFoundError):
    code = "not_found"


class AlreadyDecided(ConflictError):
    code = "already_decided"


class SinkError(GovernError):
    """An alert could not be delivered; it stays pending and is retried."""

    code = "sink_error"
