"""Authentication and authorization of API callers by Tether tokens and roles.

Roles: `admin` (everything), `auditor` (read-only, audit included), `owner:<id>` (read
that owner's identities).
"""

from tether.auth._service import Authenticator, Principal, validate_roles
from tether.auth.errors import AuthError, Forbidden, InvalidRole, Unauthenticated

__all__ = [
    "AuthError",
    "Authenticator",
    "Forbidden",
    "InvalidRole",
    "Principal",
    "Unauthenticated",
    "validate_roles",
]
