"""A profile's Redis grants: key and channel patterns, command categories and commands.

Read when the estate is applied (so a bad profile is refused there) and again when a
credential is issued; nothing here touches a server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether.targets.errors import InvalidGrants

# Allow-lists of the forms a grant may take. Each becomes one RESP argument, so the real
# danger is a value Redis would read as more than one rule or as a different kind of rule:
# whitespace, control characters, selectors `(...)`, and bare keywords such as `allkeys`,
# `allcommands`, `on`, `nopass` or `>password` never match these.
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_:.\-/*?\[\]{}^!@#=+,|\\]{1,256}")
_CATEGORY = re.compile(r"[+-]@[a-z]{1,64}")
_COMMAND = re.compile(r"[+-][a-z][a-z_]{0,63}(?:\|[a-z][a-z_-]{0,63})?")
_GRANT_FIELDS = frozenset({"keys", "channels", "categories", "commands"})
_MAX_ENTRIES = 256
#: Categories a grant may not add: `-@dangerous` always follows the categories, so these
#: would be silently void; refusing them says so at apply time instead.
_REFUSED_CATEGORIES = frozenset({"+@dangerous", "+@admin"})
_DEFAULT_CATEGORIES = ("+@read",)


@dataclass(frozen=True, slots=True)
class AclGrants:
    """A profile's grants, validated; `rules()` renders them as ACL SETUSER rules."""

    keys: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    categories: tuple[str, ...] = _DEFAULT_CATEGORIES
    commands: tuple[str, ...] = ()

    def rules(self, db: int = 0) -> list[str]:
        rules = ["resetkeys", *(f"~{k}" for k in self.keys)]
        rules += ["resetchannels", *(f"&{c}" for c in self.channels)]
        rules += [*self.categories, "-@dangerous", *self.commands]
        if db:
            # ACLs do not scope databases; allow selecting exactly the DSN's database.
            rules.append(f"+select|{db}")
        # Last, whatever came before: a leased user must never administer the server
        # (create users, change config, kill clients), or it could outlive its lease.
        rules.append("-@admin")
        return rules


def parse_grants(grants: Mapping[str, Any] | None) -> AclGrants:
    """Validate a profile's `grants`; missing means read-only on no keys (deny by default).

    Raises InvalidGrants naming the bad field, never echoing more than its position.
    """
    if grants is None:
        return AclGrants()
    if not isinstance(grants, Mapping):
        raise InvalidGrants("grants: expected a mapping")
    unknown = sorted(str(k) for k in grants if k not in _GRANT_FIELDS)
    if unknown:
        raise InvalidGrants(f"grants: unknown field(s) {', '.join(unknown)}")
    categories = _entries(grants, "categories", _CATEGORY)
    refused = sorted(set(categories) & _REFUSED_CATEGORIES)
    if refused:
        raise InvalidGrants(f"grants.categories: {', '.join(refused)} cannot be granted")
    return AclGrants(
        keys=_entries(grants, "keys", _KEY_PATTERN),
        channels=_entries(grants, "channels", _KEY_PATTERN),
        categories=categories if grants.get("categories") is not None else _DEFAULT_CATEGORIES,
        commands=_entries(grants, "commands", _COMMAND),
    )


def _entries(grants: Mapping[str, Any], field: str, form: re.Pattern[str]) -> tuple[str, ...]:
    value = grants.get(field)
    if value is None:
        return ()
    # A bare string would otherwise be iterated character by character.
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidGrants(f"grants.{field}: expected a list of strings")
    if len(value) > _MAX_ENTRIES:
        raise InvalidGrants(f"grants.{field}: at most {_MAX_ENTRIES} entries")
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not form.fullmatch(entry):
            raise InvalidGrants(f"grants.{field}[{index}]: not an allowed {field[:-1]} form")
    return tuple(value)
