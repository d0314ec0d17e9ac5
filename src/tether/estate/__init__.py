"""The declarative estate: schema, validation, plan and idempotent apply.

The estate file is the whole truth about owners, vendors, issuers, profiles and
identities. `parse_estate` refuses it with the path of every bad field (the first
`MAX_REPORTED` of at most `MAX_COUNTED` it looks for); every id has one safe shape
(`SAFE_ID_PATTERN`, `is_safe_id`) so that it can be put in a URL; `EstateService`
plans the difference from what is stored and applies it in one transaction. Identities
dropped from the file are retired, never deleted.
"""

from tether._internal.ids import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN, SAFE_ID_RULE, is_safe_id
from tether.estate._file import load_estate_file, load_estate_text
from tether.estate._parse import parse_estate
from tether.estate._schema import estate_schema
from tether.estate._service import Change, EstateService, Plan
from tether.estate._view import EstateView, EstateViewHolder, load_view
from tether.estate.errors import MAX_COUNTED, MAX_REPORTED, EstateError, EstateInvalid, Problem

__all__ = [
    "MAX_COUNTED",
    "MAX_REPORTED",
    "SAFE_ID_MAX_LENGTH",
    "SAFE_ID_PATTERN",
    "SAFE_ID_RULE",
    "Change",
    "EstateError",
    "EstateInvalid",
    "EstateService",
    "EstateView",
    "EstateViewHolder",
    "Plan",
    "Problem",
    "estate_schema",
    "is_safe_id",
    "load_estate_file",
    "load_estate_text",
    "load_view",
    "parse_estate",
]
