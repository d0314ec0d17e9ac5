"""Registration rules: which identity a piece of verified evidence stands for."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from tether.attest._evidence import Evidence, selector_value
from tether.attest.errors import AmbiguousIdentity, NoMatchingIdentity
from tether.model import Identity, IdentityStatus

_GLOB_CHARS = frozenset("*?[")


def claim_matches(rule_value: Any, selector: str | None) -> bool:
    """One rule claim against one selector: glob when the rule has glob characters."""
    if selector is None:
        return False
    if isinstance(rule_value, str):
        if _GLOB_CHARS.isdisjoint(rule_value):
            return rule_value == selector
        return fnmatchcase(selector, rule_value)
    expected = selector_value(rule_value)
    return expected is not None and expected == selector


def rule_matches(evidence: Evidence, rule: Mapping[str, Any] | None) -> bool:
    if not isinstance(rule, Mapping) or rule.get("issuer") != evidence.issuer_id:
        return False
    claims = rule.get("claims")
    # A rule with no claims would accept every token the issuer ever signs (for GitHub,
    # every workflow in every repository that asks for our audience): never a match.
    if not isinstance(claims, Mapping) or not claims:
        return False
    selectors = evidence.selectors
    return all(
        isinstance(name, str) and claim_matches(value, selectors.get(name))
        for name, value in claims.items()
    )


def match_identity(evidence: Evidence, identities: Iterable[Identity]) -> Identity:
    """The one active identity whose registration rule matches `evidence`."""
    matches = [
        identity
        for identity in identities
        if identity.status == IdentityStatus.ACTIVE and rule_matches(evidence, identity.attest)
    ]
    if not matches:
        raise NoMatchingIdentity(
            f"no active identity's attestation rule matches this evidence "
            f"(issuer {evidence.issuer_id})"
        )
    if len(matches) > 1:
        names = ", ".join(sorted(identity.id for identity in matches))
        raise AmbiguousIdentity(f"the evidence matches more than one identity: {names}")
    return matches[0]
