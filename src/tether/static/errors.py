"""Errors of static secrets."""

from tether.errors import TetherError


class StaticError(TetherError):
    code = "static_error"


class InvalidCredential(StaticError):
    status_code = 422
    code = "invalid_credential"


class CredentialExists(StaticError):
    status_code = 409
    code = "conflict"


class NotAReader(StaticError):
    status_code = 403
    code = "not_a_reader"
