"""Tether: a control plane for non-human identities.

The public surface is small: the CLI (`tether`), the HTTP API and, for workloads,
`tether.client`. Everything under `_internal` and every name with a leading underscore
is private and may change without notice.
"""

__version__ = "0.1.0"

from tether.errors import TetherError

__all__ = ["TetherError", "__version__"]
