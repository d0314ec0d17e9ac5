"""The errors of tether.keys. Messages name keys, versions and fields, never material,
plaintext, ciphertext or shares."""

from tether.errors import TetherError


class KeysError(TetherError):
    """A confidentiality key operation could not be done; the message says why."""

    code = "keys_error"


class KeyNotFound(KeysError):
    status_code = 404
    code = "key_not_found"


class KeyExists(KeysError):
    status_code = 409
    code = "key_exists"


class InvalidKeyRequest(KeysError):
    """A request names a bad field (its path leads the message) and changed nothing."""

    status_code = 422
    code = "invalid_key_request"


class KeyOperationDenied(KeysError):
    """Refused: separation of duties (an administrator using a key, a user administering
    one) or the policy decision. `reasons` are the decision's (or the rule's) sentences."""

    status_code = 403
    code = "key_operation_denied"

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons or (message,)


class KeyPendingDeletion(KeysError):
    """The key is scheduled for deletion: nothing uses it until the deletion is cancelled."""

    status_code = 409
    code = "key_pending_deletion"


class DecryptionFailed(KeysError):
    """One error for every ciphertext that does not open: malformed, another key's, a
    relabelled version, tampered, or the wrong associated data. It never says which, and
    never quotes the input."""

    status_code = 400
    code = "decryption_failed"

    def __init__(self) -> None:
        super().__init__("the ciphertext could not be decrypted with this key")


class VersionNotAllowed(KeysError):
    """The ciphertext's (or signature's) version is below the key's minimum, or trimmed."""

    status_code = 400
    code = "key_version_not_allowed"


class KeysUnavailable(KeysError):
    """Tether is sealed: no key material can be opened."""

    status_code = 503
    code = "keys_unavailable"


class InvalidCryptoPolicy(KeysError):
    """The estate's `crypto_policy:` is refused; the message starts with the field's path."""

    status_code = 422
    code = "invalid_crypto_policy"


class InvalidApproverGroup(KeysError):
    """An approver group is refused; the message starts with the field's path."""

    status_code = 422
    code = "invalid_approver_group"


class ApprovalNotFound(KeysError):
    status_code = 404
    code = "approval_not_found"


class ApprovalRefused(KeysError):
    """This principal may not approve or deny this request (its requester, not a member
    of the group, or voted already)."""

    status_code = 403
    code = "approval_refused"


class ApprovalClosed(KeysError):
    """The request is no longer pending (approved, denied, expired, executed, cancelled)."""

    status_code = 409
    code = "approval_closed"


class EscrowError(KeysError):
    """Escrow could not be set up, verified or recovered; the message says why."""

    status_code = 422
    code = "escrow_error"


class RecoveryFailed(EscrowError):
    """The shares given do not rebuild the key (too few, mismatched, or not decryptable
    with the identities given)."""

    code = "recovery_failed"
