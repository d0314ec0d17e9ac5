"""Static (legacy) secrets: vaulted through the barrier, bound to the identities that may
read them, rotated in stages with an overlap window; use of an old version is an alert."""

from tether.static._backend import SecretUse, StaticBackend, VaultOnly
from tether.static._postgres import (
    InvalidStaticBackend,
    PostgresStaticBackend,
    StaticUserConflict,
)
from tether.static._service import (
    InvalidCredential,
    NotAReader,
    SecretVersion,
    StaticCredential,
    StaticError,
    StaticSecrets,
    Verification,
)

__all__ = [
    "InvalidCredential",
    "InvalidStaticBackend",
    "NotAReader",
    "PostgresStaticBackend",
    "SecretUse",
    "SecretVersion",
    "StaticBackend",
    "StaticCredential",
    "StaticError",
    "StaticSecrets",
    "StaticUserConflict",
    "VaultOnly",
    "Verification",
]
