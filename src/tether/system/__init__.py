"""System operations on a node: initialize, unseal, seal and rotate the barrier (each
audited, unseal failures as per-window summaries), verify the audit log, and dev mode's
self-initialization. Transports call these through the composition root."""

from tether.system._service import DevFiles, InitResult, SystemService

__all__ = ["DevFiles", "InitResult", "SystemService"]
