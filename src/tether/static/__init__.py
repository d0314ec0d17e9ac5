"""Static (legacy) secrets: vaulted through the barrier, bound to the identities that may
read them, rotated in stages with an overlap window; use of an old version is an alert.

A credential of kind `static` lives only in Tether (`VaultOnly`); other kinds are served
by a target system, whose kind brings the backend (`tether.targets`, e.g. two
alternating PostgreSQL roles)."""

from tether.static._backend import SecretUse, StaticBackend, VaultOnly
from tether.static._model import SecretVersion, StaticCredential, Verification
from tether.static._service import StaticSecrets
from tether.static.errors import CredentialExists, InvalidCredential, NotAReader, StaticError

__all__ = [
    "CredentialExists",
    "InvalidCredential",
    "NotAReader",
    "SecretUse",
    "SecretVersion",
    "StaticBackend",
    "StaticCredential",
    "StaticError",
    "StaticSecrets",
    "VaultOnly",
    "Verification",
]
