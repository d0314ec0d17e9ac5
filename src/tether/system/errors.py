"""Errors of system operations on a node of several worker processes."""

from tether.errors import TetherError


class SystemOperationError(TetherError):
    code = "system_error"


class CustodianUnavailable(SystemOperationError):
    """The supervisor that holds the node's root key did not answer this worker: nothing
    was unsealed, and a seal asked for may have sealed this worker only."""

    status_code = 503
    code = "supervisor_unavailable"


class CustodianRefused(SystemOperationError):
    """The supervisor refused with an error of its own (say, the audit log could not be
    written); its status and code are the ones it gave."""

    def __init__(self, message: str, status_code: int, code: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
