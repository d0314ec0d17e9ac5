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
