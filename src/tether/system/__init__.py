"""System operations on a node: initialize, unseal, seal and rotate the barrier (each
audited, unseal failures as per-window summaries), verify the audit log, dev mode's
self-initialization and a production node's unseal key file. A worker of a node reaches
the process keeping the root key through a `Custodian`. Transports call these through the
composition root."""

from tether.system._custodian import Custodian
from tether.system._service import DevFiles, InitResult, SystemService
from tether.system.errors import CustodianRefused, CustodianUnavailable, SystemOperationError

__all__ = [
    "Custodian",
    "CustodianRefused",
    "CustodianUnavailable",
    "DevFiles",
    "InitResult",
    "SystemOperationError",
    "SystemService",
]
