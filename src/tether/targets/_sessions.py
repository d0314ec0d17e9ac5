"""Usage evidence from target systems: who is connected right now, and who still could be.

A target kind whose provider offers `sample_sessions` and `usable_users` (`SessionSource`)
lets Tether see the live sessions of its per-lease objects and of static users, and tell
whether a user that should be retired can still log in. `TargetRegistry.sample_sessions`
and `TargetRegistry.usable_users` are the callers' entry points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tether.providers import ProviderError

#: What `TargetSession.source` says for a client on a Unix socket (no address to give).
LOCAL_SOURCE = "local"


@dataclass(frozen=True, slots=True)
class TargetSession:
    """One live session at a target, as sampled (nothing here is a secret).

    `lease_id` is set when `user` is one of Tether's per-lease objects; `application`
    is what the client calls itself (PostgreSQL application_name, Redis client name);
    `source` is the client address without port, "local" for a Unix socket, or None
    when the target would not show it; `started_at` is in UTC, None when not shown.
    """

    target: str
    user: str
    lease_id: str | None = None
    application: str | None = None
    source: str | None = None
    started_at: dt.datetime | None = None


@runtime_checkable
class SessionSource(Protocol):
    """A provider that can report its target's sessions and which users can log in.

    Both raise the kind's ProviderError (naming the error class, never what the server
    said) when the target cannot be reached or refuses."""

    def sample_sessions(self, static_users: Collection[str]) -> list[TargetSession]:
        """Live sessions of users with Tether's object prefix and of `static_users`."""
        ...

    def usable_users(self, users: Collection[str]) -> set[str]:
        """Which of `users` exist at the target and can log in now."""
        ...


class EvidenceUnsupported(ProviderError):
    """The target's kind cannot report sessions or usable users. Not retryable: a
    ProviderError only so that callers handling target failures handle this too."""

    status_code = 422
    code = "evidence_unsupported"
