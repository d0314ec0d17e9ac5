"""A profile's PostgreSQL grants: which privileges on which schemas and tables.

Read when the estate is applied (so a bad profile is refused there) and again when a
credential is issued; nothing here touches a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from tether.targets.errors import InvalidGrants
from tether.targets.postgres._session import MAX_IDENTIFIER_BYTES

#: Table privileges a profile may grant. ALL is left out on purpose: a profile names what
#: it needs, and a later PostgreSQL release cannot widen it behind the estate's back.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
PRIVILEGE_SQL = {name: sql.SQL(name) for name in TABLE_PRIVILEGES}
_GRANT_KEYS = frozenset({"schema", "privileges", "tables"})


@dataclass(frozen=True, slots=True)
class Grant:
    """Privileges on the tables of one schema; `tables=None` means every table it holds
    when the credential is issued (tables created later are not included)."""

    schema: str
    privileges: tuple[str, ...]
    tables: tuple[str, ...] | None = None


#: What a profile without grants gets: read-only on `public`.
DEFAULT_GRANTS = (Grant(schema="public", privileges=("SELECT",)),)


def parse_grants(grants: object) -> tuple[Grant, ...]:
    """Validate a profile's `grants` ({schema, privileges, tables?}, or a list of them).

    Raises InvalidGrants naming the bad field; meant for estate validation too, so a bad
    profile is refused at `apply` rather than at the first issuance.
    """
    if grants is None:
        return DEFAULT_GRANTS
    if isinstance(grants, Mapping):
        return (_parse_grant(grants, "grants"),)
    if isinstance(grants, Sequence) and not isinstance(grants, str | bytes):
        if not grants:
            raise InvalidGrants("grants: must not be empty (omit it for read-only on public)")
        return tuple(_parse_grant(g, f"grants[{i}]") for i, g in enumerate(grants))
    raise InvalidGrants("grants: expected a mapping {schema, privileges, tables} or a list")


def _parse_grant(spec: object, path: str) -> Grant:
    if not isinstance(spec, Mapping):
        raise InvalidGrants(f"{path}: expected a mapping {{schema, privileges, tables}}")
    unknown = sorted(str(k) for k in spec if k not in _GRANT_KEYS)
    if unknown:
        raise InvalidGrants(f"{path}: unknown field(s) {', '.join(unknown)}")
    schema = _identifier(spec.get("schema"), f"{path}.schema")
    raw = spec.get("privileges")
    if not isinstance(raw, list | tuple) or not raw:
        raise InvalidGrants(f"{path}.privileges: expected a non-empty list, e.g. [SELECT]")
    privileges: list[str] = []
    for j, item in enumerate(raw):
        name = item.strip().upper() if isinstance(item, str) else None
        if name not in PRIVILEGE_SQL:
            raise InvalidGrants(
                f"{path}.privileges[{j}]: unknown privilege {item!r}; "
                f"allowed: {', '.join(TABLE_PRIVILEGES)}"
            )
        if name not in privileges:
            privileges.append(name)
    tables: tuple[str, ...] | None = None
    if spec.get("tables") is not None:
        raw_tables = spec["tables"]
        if not isinstance(raw_tables, list | tuple) or not raw_tables:
            raise InvalidGrants(f"{path}.tables: expected a non-empty list (omit it for all)")
        tables = tuple(
            dict.fromkeys(_identifier(t, f"{path}.tables[{k}]") for k, t in enumerate(raw_tables))
        )
    return Grant(schema=schema, privileges=tuple(privileges), tables=tables)


def _identifier(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidGrants(f"{path}: expected a non-empty name")
    if "\x00" in value or len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidGrants(f"{path}: not a valid PostgreSQL name (≤ 63 bytes, no NUL)")
    return value
