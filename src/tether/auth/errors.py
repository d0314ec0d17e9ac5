from tether.errors import TetherError


class AuthError(TetherError):
    code = "auth_error"


class Unauthenticated(AuthError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(AuthError):
    status_code = 403
    code = "forbidden"


class InvalidRole(AuthError):
    status_code = 422
    code = "invalid_role"


class UnknownToken(Unauthenticated):
    """A well-formed Tether token that is no API token this server knows."""


class NotAnApiToken(Unauthenticated):
    """A token of another kind (a task token, an access token, a JWT) where an API token
    is needed: the message says which kind was given and what the route needs."""

    def __init__(self, given: str, needed: str) -> None:
        super().__init__(f"this is {given}; this route needs {needed}")
        self.given = given
        self.needed = needed


class TokenNotFound(AuthError):
    status_code = 404
    code = "not_found"
