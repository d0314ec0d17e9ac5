from tether.errors import TetherError


class StoreError(TetherError):
    """A storage operation failed; the transaction it was part of was rolled back."""

    status_code = 500
    code = "store_error"


class StoreUnavailable(StoreError):
    """The database could not be reached."""

    status_code = 503
    code = "store_unavailable"
