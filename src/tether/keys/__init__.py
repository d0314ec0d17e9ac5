"""Confidentiality keys: a control path of their own for the keys that protect data.

Access credentials are short-lived leases revoked at task end; a data key is a durable
trust anchor. `KeyService` keeps named keys with versions (aes256-gcm,
chacha20-poly1305, ed25519, ecdsa-p256, hmac-sha256), their material sealed by the
barrier and never exported in the clear; rotates them on cryptographic policy (usage
counters, maximum age by data classification); escrows them M of N to named holders
(`python -m tether.keys.recover` rebuilds one offline); and enforces separation of
duties (`KeyAdmin` administers, `KeyUser` uses, `Approver` votes) and dual control
(destructive operations take effect after M-of-N approvals). Every use is a policy
decision; everything is audited (use in per-interval summaries, denials and
administration one by one). Nothing here touches a lease, and no lease event touches a key.
"""

from tether.keys._approvals import (
    ApprovalRequest,
    ApprovalState,
    ApproverGroup,
    Operation,
    Vote,
)
from tether.keys._decide import (
    DecisionLike,
    KeyDecider,
    KeyUseRequest,
    cedar_decider,
    key_profiles,
)
from tether.keys._escrow import (
    BUNDLE_FORMAT,
    ENVELOPE_FORMAT,
    Recovered,
    load_identity,
    parse_recipient,
    recover,
)
from tether.keys._findings import (
    ADMIN_ROLE,
    KEY_RULES,
    KeyFinding,
    admin_tokens,
    key_findings,
    key_using_owners,
    live_roles,
    role_conflicts,
)
from tether.keys._model import (
    Approver,
    DeletionSchedule,
    EscrowConfig,
    EscrowHolder,
    Key,
    KeyAdmin,
    KeyInfo,
    KeyPrincipal,
    KeyUser,
    KeyVersion,
    VersionUsage,
)
from tether.keys._policy import (
    AEAD_DEFAULT_LIMIT,
    CLASSIFICATIONS,
    CryptoPolicy,
    classification_of,
)
from tether.keys._service import (
    KEYS_CHANGED,
    BatchResult,
    ConfigureResult,
    DataKey,
    EscrowReport,
    EscrowVersionReport,
    KeyParts,
    KeyService,
    KeySettings,
)
from tether.keys._types import KeyType, key_check_value
from tether.keys.errors import (
    ApprovalClosed,
    ApprovalNotFound,
    ApprovalRefused,
    DecryptionFailed,
    EscrowError,
    InvalidApproverGroup,
    InvalidCryptoPolicy,
    InvalidKeyRequest,
    KeyExists,
    KeyNotFound,
    KeyOperationDenied,
    KeyPendingDeletion,
    KeysError,
    KeysUnavailable,
    RecoveryFailed,
    VersionNotAllowed,
)
from tether.policy import KEY_PROVIDER

__all__ = [
    "ADMIN_ROLE",
    "AEAD_DEFAULT_LIMIT",
    "BUNDLE_FORMAT",
    "CLASSIFICATIONS",
    "ENVELOPE_FORMAT",
    "KEYS_CHANGED",
    "KEY_PROVIDER",
    "KEY_RULES",
    "ApprovalClosed",
    "ApprovalNotFound",
    "ApprovalRefused",
    "ApprovalRequest",
    "ApprovalState",
    "Approver",
    "ApproverGroup",
    "BatchResult",
    "ConfigureResult",
    "CryptoPolicy",
    "DataKey",
    "DecisionLike",
    "DecryptionFailed",
    "DeletionSchedule",
    "EscrowConfig",
    "EscrowError",
    "EscrowHolder",
    "EscrowReport",
    "EscrowVersionReport",
    "InvalidApproverGroup",
    "InvalidCryptoPolicy",
    "InvalidKeyRequest",
    "Key",
    "KeyAdmin",
    "KeyDecider",
    "KeyExists",
    "KeyFinding",
    "KeyInfo",
    "KeyNotFound",
    "KeyOperationDenied",
    "KeyParts",
    "KeyPendingDeletion",
    "KeyPrincipal",
    "KeyService",
    "KeySettings",
    "KeyType",
    "KeyUseRequest",
    "KeyUser",
    "KeyVersion",
    "KeysError",
    "KeysUnavailable",
    "Operation",
    "Recovered",
    "RecoveryFailed",
    "VersionNotAllowed",
    "VersionUsage",
    "Vote",
    "admin_tokens",
    "cedar_decider",
    "classification_of",
    "key_check_value",
    "key_findings",
    "key_profiles",
    "key_using_owners",
    "live_roles",
    "load_identity",
    "parse_recipient",
    "recover",
    "role_conflicts",
]
