from tether.errors import TetherError


class StoreError(TetherError):
    """A storage operation failed; the transaction it was part of was rolled back."""

    status_code = 500
    code = "store_error"


class StoreUnavailable(StoreError):
    """The database could not be reached."""

    status_code = 503
    code = "store_unavailable"


class StoreUnreachable(StoreUnavailable):
    """The database could not be opened when the node started: its message names the
    database (never its password) and the driver's reason."""


class ForeignSchema(StoreError):
    """The database holds another application's tables; Tether will not migrate into it."""

    code = "foreign_schema"
