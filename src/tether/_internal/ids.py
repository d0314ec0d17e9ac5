"""The one shape every id has (estate objects, targets, static secrets): one that a URL
path can carry.

An id is 1 to 128 ASCII letters, digits and `-` `_` `.` `:` `@`; it starts with a letter
or a digit and never contains `..`. No `/`, no spaces, no `%`, nothing outside ASCII:
`GET /v1/identities/{id}` (and every other route that takes an id) can address it as is.
"""

from __future__ import annotations

import re

#: The pattern (JSON Schema / ECMA-262, also valid for Python `re` and for pydantic's
#: Rust regex engine: no look-around) of an id. The length is limited separately by
#: `SAFE_ID_MAX_LENGTH`: together they are the whole rule. `..` cannot match because a
#: dot is only ever followed by a character that is not a dot, or by the end.
SAFE_ID_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_:@-]|\.[A-Za-z0-9_:@-])*\.?$"
SAFE_ID_MAX_LENGTH = 128
#: The rule in words, for error messages and the published schema.
SAFE_ID_RULE = (
    f"1 to {SAFE_ID_MAX_LENGTH} ASCII letters, digits and - _ . : @, "
    "starting with a letter or digit, with no '..'"
)

_SAFE_ID = re.compile(SAFE_ID_PATTERN)


def is_safe_id(value: object) -> bool:
    """Whether `value` is an id by the rule above (`SAFE_ID_PATTERN`, `SAFE_ID_MAX_LENGTH`)."""
    return (
        isinstance(value, str)
        and len(value) <= SAFE_ID_MAX_LENGTH
        and _SAFE_ID.fullmatch(value) is not None
    )
