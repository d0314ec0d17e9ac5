"""Tether's token format now lives in `tether._internal.tokens` (the ground floor, so
`_internal.logs` can redact tokens without importing a feature package).

This re-export stays only while `tether.issuance` still imports from here; once it
imports `tether._internal.tokens`, delete this module.
"""

from tether._internal.tokens import PREFIX, TOKEN_PATTERN, is_well_formed, new_token, token_hash

__all__ = ["PREFIX", "TOKEN_PATTERN", "is_well_formed", "new_token", "token_hash"]
