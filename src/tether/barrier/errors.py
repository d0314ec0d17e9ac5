from tether.errors import TetherError


class BarrierError(TetherError):
    code = "barrier_error"


class Sealed(BarrierError):
    """The barrier is sealed: no secret can be read or written until it is unsealed."""

    status_code = 503
    code = "sealed"


class NotInitialized(BarrierError):
    status_code = 503
    code = "not_initialized"


class AlreadyInitialized(BarrierError):
    status_code = 409
    code = "already_initialized"


class InvalidShare(BarrierError):
    status_code = 400
    code = "invalid_share"


class UnsealFailed(BarrierError):
    status_code = 400
    code = "unseal_failed"


class RateLimited(BarrierError):
    """Too many failed unseal attempts from one source: refused without being read."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        #: Whole seconds until the source may try again (for a `Retry-After` header).
        self.retry_after = retry_after


class DecryptionFailed(BarrierError):
    """A ciphertext did not authenticate: wrong record, wrong key, or tampered."""

    status_code = 500
    code = "decryption_failed"


class UnknownTerm(DecryptionFailed):
    """A record was written under a keyring term this node does not hold (yet)."""

    code = "unknown_term"
