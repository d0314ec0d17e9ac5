"""Policy at request time (invariant 4): Cedar policies over Tether's schema, fail closed.

`PolicyEngine.compile` parses the estate's policies once and validates them (strict)
against `CEDAR_SCHEMA`, refusing a bad one with its id; `evaluate` decides a
`PolicyRequest` in-process:

1. guard rails no policy can lift, checked in Python (`guardrail:<name>` ids): identity
   not active or expired, approval expired, vendor unknown or its contract ended, not
   entitled, scopes beyond the entitlement or the profile, TTL not positive or beyond
   the profile's or the kind's cap, attestation required by the kind but missing;
2. the estate's policies together with `tether:default`, which permits an attested
   identity exactly its entitlements: user `forbid`s restrict it, user `permit`s can
   widen it only inside the guard rails (say, to unattested api keys).

Anything else denies: no permit, a Cedar error, a malformed request, an empty set.

The schema (namespace `Tether`; `tether policy schema` prints it):

- principal `Tether::Identity::"<id>"`: kind, owner, purpose, justification,
  environment, criticality, status, has_approval; optional system, region, vendor,
  approval {by, expires}, approval_expires, expires (times as epoch seconds); the
  identity's labels are entity tags (`principal.getTag("team")`).
- action `Tether::Action::"issue" | "renew" | "exchange"` (issuance, ACTIONS) and
  `"encrypt" | "decrypt" | "sign" | "verify" | "hmac" | "datakey" | "rewrap"` (uses of a
  confidentiality key, KEY_ACTIONS: the resource is the profile of provider `key` whose
  target is the key, the scopes are `[action]`, and no TTL guard rail applies).
- resource `Tether::Profile::"<id>"`: provider, max_ttl_seconds, scopes; optional
  audience, target.
- context: attested, entitled, entitled_scopes, claims (a record of the optional
  selectors in CLAIM_SELECTORS), requested_ttl_seconds, scopes, now, utc_hour,
  utc_weekday (1 = Monday), environment (the identity's); optional issuer, task,
  task_name, intent, source_ip (an ipaddr), actor.
"""

from tether.policy._compile import DEFAULT_POLICY_ID, DEFAULT_POLICY_SOURCE, validate_policies
from tether.policy._engine import PolicyEngine
from tether.policy._holder import PolicyHolder
from tether.policy._request import Decision, PolicyRequest, entitled_scopes
from tether.policy._schema import (
    ACTIONS,
    ALL_ACTIONS,
    CEDAR_SCHEMA,
    CLAIM_SELECTORS,
    KEY_ACTIONS,
    KEY_PROVIDER,
    schema_text,
)
from tether.policy._suite import Case, CaseResult, Suite, load_suite, run_suite
from tether.policy.errors import PolicyError, PolicyInvalid, PolicyProblem, PolicyTestInvalid

__all__ = [
    "ACTIONS",
    "ALL_ACTIONS",
    "CEDAR_SCHEMA",
    "CLAIM_SELECTORS",
    "DEFAULT_POLICY_ID",
    "DEFAULT_POLICY_SOURCE",
    "KEY_ACTIONS",
    "KEY_PROVIDER",
    "Case",
    "CaseResult",
    "Decision",
    "PolicyEngine",
    "PolicyError",
    "PolicyHolder",
    "PolicyInvalid",
    "PolicyProblem",
    "PolicyRequest",
    "PolicyTestInvalid",
    "Suite",
    "entitled_scopes",
    "load_suite",
    "run_suite",
    "schema_text",
    "validate_policies",
]
