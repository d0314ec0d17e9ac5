from tether.errors import TetherError


class AuditError(TetherError):
    code = "audit_error"


class AuditUnavailable(AuditError):
    """The audit log could not be written: the operation it records does not happen."""

    status_code = 503
    code = "audit_unavailable"
