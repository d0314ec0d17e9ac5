from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """A registered system Tether issues credentials for. `dsn` is secret: it carries the
    admin credential, is stored only through the barrier, and is never printed."""

    name: str
    kind: str  # the name of its TargetKind
    dsn: str

    def __repr__(self) -> str:
        return f"Target(name={self.name!r}, kind={self.kind!r})"
