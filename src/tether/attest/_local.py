"""Attestation of a local caller by the kernel: no token, the socket says who it is.

The Workload API reads the caller's credentials from its Unix socket (SO_PEERCRED: pid,
uid, gid) and the binary behind the pid (its path and sha256). An identity's rule
`attest: {unix: {uid, gid?, path?, sha256?}}` names what it must be: every field given
must be exactly what the kernel says. A rule that names only a uid accepts any program
that user runs; naming the binary (path, or better its sha256) pins the workload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.attest.errors import AmbiguousIdentity, NoMatchingIdentity
from tether.model import Identity, IdentityStatus

#: The selectors a unix rule may name.
UNIX_SELECTORS = ("uid", "gid", "path", "sha256")


@dataclass(frozen=True, slots=True)
class LocalCaller:
    """What the kernel says about a process on the other end of a Unix socket."""

    pid: int
    uid: int
    gid: int
    #: The binary the process runs (/proc/<pid>/exe), None when it cannot be read.
    path: str | None = None
    sha256: str | None = None

    @property
    def selectors(self) -> dict[str, str]:
        """As the audit trail and policy see it (strings, like a token's selectors)."""
        out = {"pid": str(self.pid), "uid": str(self.uid), "gid": str(self.gid)}
        if self.path is not None:
            out["path"] = self.path
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.selectors.items() if k != "sha256")


def local_rule_matches(rule: Mapping[str, Any], caller: LocalCaller) -> bool:
    if "uid" not in rule:
        return False  # a rule must name at least the user: never "any local process"
    for name in UNIX_SELECTORS:
        if name in rule and rule[name] != getattr(caller, name):
            return False
    return True


def match_local(caller: LocalCaller, identities: Iterable[Identity]) -> Identity:
    """The one active identity whose unix rule the caller satisfies."""
    matches = [
        identity
        for identity in identities
        if identity.status is IdentityStatus.ACTIVE
        and (rule := identity.unix_rule) is not None
        and local_rule_matches(rule, caller)
    ]
    if not matches:
        raise NoMatchingIdentity(f"no active identity's unix rule matches {caller.describe()}")
    if len(matches) > 1:
        names = ", ".join(sorted(identity.id for identity in matches))
        raise AmbiguousIdentity(f"the caller matches more than one identity: {names}")
    return matches[0]
