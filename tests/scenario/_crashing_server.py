"""`tether` whose postgres kind dies mid-issuance (`_crashing_server.py <crash_at> serve ...`).

The crash test's server. It registers, in place of the postgres kind, one whose provider
kills its own process (SIGKILL: no cleanup, no flushing, as a power cut would) at
`crash_at`, then runs the ordinary CLI:

- `after-lease-commit`: when `issue` is called, i.e. once the pending lease is committed
  and before the role exists;
- `after-provider-issue`: as soon as the real `issue` has created the role, before the
  lease is marked active.

Nothing in Tether knows about it: the hook is the registry of target kinds, which a test
may extend like any plug-in.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from typing import Any

from tether.cli import main
from tether.model import Identity, Lease, Profile
from tether.providers import ExternalProvider, IssuedCredential
from tether.targets import Target, TargetKind, register, target_kind

CRASH_POINTS = ("after-lease-commit", "after-provider-issue")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _CrashingProvider:
    """The real provider, except that `issue` kills the process at the crash point."""

    def __init__(self, real: ExternalProvider, crash_at: str) -> None:
        self._real = real
        self._crash_at = crash_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        if self._crash_at == "after-lease-commit":
            _die()
        credential = self._real.issue(lease, identity, profile)
        if self._crash_at == "after-provider-issue":
            _die()
        return credential


def crashing(kind: TargetKind, crash_at: str) -> TargetKind:
    def provider(target: Target) -> ExternalProvider:
        wrapped: Any = _CrashingProvider(kind.provider(target), crash_at)
        return wrapped  # an ExternalProvider by delegation

    return replace(kind, provider=provider)


if __name__ == "__main__":
    crash_at = sys.argv.pop(1)
    if crash_at not in CRASH_POINTS:
        sys.exit(f"crash point must be one of {', '.join(CRASH_POINTS)}, not {crash_at!r}")
    register(crashing(target_kind("postgres"), crash_at), replace=True)
    main()
