"""Authentication and authorization of API callers by Tether tokens and roles.

Roles: `admin` (everything), `auditor` (read-only, audit included), `owner:<id>` (that
owner's identities: read them, end their tasks, revoke their leases), `introspect`
(resource servers: RFC 7662 introspection and static-secret verification). Which role
reaches which route is one table, `tether.api._access.ROUTES`.
"""

from tether.auth._service import (
    ROLE_PATTERN,
    Authenticator,
    Principal,
    TokenService,
    validate_roles,
)
from tether.auth.errors import (
    AuthError,
    Forbidden,
    InvalidRole,
    NotAnApiToken,
    TokenNotFound,
    Unauthenticated,
    UnknownToken,
)

__all__ = [
    "ROLE_PATTERN",
    "AuthError",
    "Authenticator",
    "Forbidden",
    "InvalidRole",
    "NotAnApiToken",
    "Principal",
    "TokenNotFound",
    "TokenService",
    "Unauthenticated",
    "UnknownToken",
    "validate_roles",
]
