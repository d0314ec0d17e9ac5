"""Root of Tether's exception hierarchy.

Each capability package derives its own errors from `TetherError`, so callers at a
boundary (HTTP, CLI) can translate any of them into one clear message. Messages never
carry secret material: they name fields and ids, not values.
"""


class TetherError(Exception):
    """Base class of every error Tether raises on purpose."""

    #: HTTP status a transport should answer with when this error reaches it.
    status_code: int = 400
    #: Short machine-readable code for clients.
    code: str = "tether_error"


class NotFoundError(TetherError):
    status_code = 404
    code = "not_found"


class ConflictError(TetherError):
    status_code = 409
    code = "conflict"
