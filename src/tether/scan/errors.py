"""The errors of tether.scan. Messages name paths, revisions and git's own words, never
the bytes that were scanned."""

from __future__ import annotations

from tether.errors import TetherError


class ScanError(TetherError):
    code = "scan_error"


class ScanSourceError(ScanError):
    """What was asked to be scanned cannot be: a path that does not exist, a directory
    that is not a git repository, a revision git does not know."""

    code = "scan_source_error"
