"""Errors of tether.cluster."""

from __future__ import annotations

from tether.errors import TetherError


class ClusterError(TetherError):
    """Base of the errors this package raises."""

    status_code = 500
    code = "cluster_error"


class Deposed(ClusterError):
    """This process no longer holds the leadership its background write was fenced by:
    the write is rolled back, and the new leader does the work."""

    status_code = 409
    code = "deposed"
