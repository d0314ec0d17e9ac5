"""The declarative estate: schema, validation, plan and idempotent apply.

The estate file is the whole truth about owners, vendors, issuers, profiles and
identities. `parse_estate` refuses it with the path of every bad field; `EstateService`
plans the difference from what is stored and applies it in one transaction. Identities
dropped from the file are retired, never deleted.
"""

from tether.estate._file import load_estate_file, load_estate_text
from tether.estate._parse import estate_schema, parse_estate
from tether.estate._service import Change, EstateService, Plan
from tether.estate._view import EstateView, EstateViewHolder, load_view
from tether.estate.errors import EstateError, EstateInvalid, Problem

__all__ = [
    "Change",
    "EstateError",
    "EstateInvalid",
    "EstateService",
    "EstateView",
    "EstateViewHolder",
    "Plan",
    "Problem",
    "estate_schema",
    "load_estate_file",
    "load_estate_text",
    "load_view",
    "parse_estate",
]
