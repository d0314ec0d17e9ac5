"""Discovery: find secrets where they leaked, tie each to its identity, and end it.

`Scanner` finds candidates in bytes (one Hyperscan pass, confirmed per rule: checksums,
entropy, allow-lists); `scan_paths` runs it over files, directories and archives on
every core, and `tether.scan`'s git reader over every added line of a repository's
history. `Exposures` (on the server) matches found secrets against every credential
Tether manages and ends the ones that still work.
"""

from tether.scan._engine import InvalidRule, Scanner, default_workers, scan_blobs, scan_paths
from tether.scan._exposures import (
    ExposureParts,
    Exposures,
    Reported,
    fingerprint,
    fingerprint_key,
)
from tether.scan._model import (
    Allowlist,
    Blob,
    Detection,
    Location,
    Managed,
    Rule,
    ScanFinding,
    ScanStats,
    redacted,
    shannon_entropy,
)
from tether.scan._rules import RULE_IDS, default_rules
from tether.scan.errors import ScanError

__all__ = [
    "RULE_IDS",
    "Allowlist",
    "Blob",
    "Detection",
    "ExposureParts",
    "Exposures",
    "InvalidRule",
    "Location",
    "Managed",
    "Reported",
    "Rule",
    "ScanError",
    "ScanFinding",
    "ScanStats",
    "Scanner",
    "default_rules",
    "default_workers",
    "fingerprint",
    "fingerprint_key",
    "redacted",
    "scan_blobs",
    "scan_paths",
    "shannon_entropy",
]
