"""The barrier: every secret Tether stores passes through it encrypted.

A root key, split with Shamir's secret sharing, opens a keyring of AES-256-GCM keys by
term; records are encrypted under the active term with their id as associated data.
Sealed, the barrier holds no key and Tether serves nothing but health and status.
"""

from tether.barrier._service import Barrier, BarrierStatus, decode_share, encode_share
from tether.barrier.errors import (
    AlreadyInitialized,
    BarrierError,
    DecryptionFailed,
    InvalidShare,
    NotInitialized,
    Sealed,
    UnsealFailed,
)

__all__ = [
    "AlreadyInitialized",
    "Barrier",
    "BarrierError",
    "BarrierStatus",
    "DecryptionFailed",
    "InvalidShare",
    "NotInitialized",
    "Sealed",
    "UnsealFailed",
    "decode_share",
    "encode_share",
]
