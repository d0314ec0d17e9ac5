"""The barrier: every secret Tether stores passes through it encrypted.

A root key, split with Shamir's secret sharing, opens a keyring of AES-256-GCM keys by
term; records are encrypted under the active term with their id as associated data.
Each share is checked on its own against a keyed commitment stored at init, and failed
unseal attempts are rate-limited per source and summarized for the audit log. Sealed,
the barrier holds no key and Tether serves nothing but health and status.
"""

from tether.barrier._guard import (
    UNSEAL_FAILURE_LIMIT,
    UNSEAL_FAILURE_WINDOW,
    UNSEAL_MAX_SOURCES,
    FailureSink,
    UnsealFailures,
    UnsealGuard,
)
from tether.barrier._service import Barrier, BarrierStatus, decode_share, encode_share
from tether.barrier.errors import (
    AlreadyInitialized,
    BarrierError,
    DecryptionFailed,
    InvalidShare,
    NotInitialized,
    RateLimited,
    Sealed,
    UnsealFailed,
)

__all__ = [
    "UNSEAL_FAILURE_LIMIT",
    "UNSEAL_FAILURE_WINDOW",
    "UNSEAL_MAX_SOURCES",
    "AlreadyInitialized",
    "Barrier",
    "BarrierError",
    "BarrierStatus",
    "DecryptionFailed",
    "FailureSink",
    "InvalidShare",
    "NotInitialized",
    "RateLimited",
    "Sealed",
    "UnsealFailed",
    "UnsealFailures",
    "UnsealGuard",
    "decode_share",
    "encode_share",
]
