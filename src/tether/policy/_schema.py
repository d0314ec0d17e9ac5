"""Tether's Cedar schema: the entities, actions and request context policies are written against.

Every policy is validated against this schema (strict mode) when it is compiled, so a
typo in an attribute name or a comparison of a string with a number is refused at
`apply` time instead of turning into a runtime error (and a deny) at request time.

Optional attributes are optional in Cedar's sense: a policy must test `has` before
reading them (`principal has region && principal.region == "eu-west-1"`).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import cedarpy

NAMESPACE = "Tether"
IDENTITY_TYPE = f"{NAMESPACE}::Identity"
PROFILE_TYPE = f"{NAMESPACE}::Profile"
ACTION_TYPE = f"{NAMESPACE}::Action"

#: What a request can ask for: a first credential, a longer life for one, or a
#: credential minted from another (RFC 8693 token exchange).
ACTIONS: tuple[str, ...] = ("issue", "renew", "exchange")

#: What a caller can do with a confidentiality key (tether.keys). The resource is the
#: profile of provider `key` that entitles the identity to the key (its `target`); the
#: request's `scopes` are `[action]`. TTL guard rails do not apply to these.
KEY_ACTIONS: tuple[str, ...] = ("encrypt", "decrypt", "sign", "verify", "hmac", "datakey", "rewrap")

#: The provider of the profiles that entitle identities to keys (`target`: the key).
KEY_PROVIDER = "key"

#: Every action the schema declares.
ALL_ACTIONS: tuple[str, ...] = ACTIONS + KEY_ACTIONS

#: The attestation selectors policies can see, under `context.claims`. They are the
#: common ones of GitHub Actions, Kubernetes service-account tokens and plain OIDC.
#: Cedar records are closed, so a claim outside this list is not visible to policy;
#: match on it with a registration rule in the estate instead.
CLAIM_SELECTORS: tuple[str, ...] = (
    "sub",
    "repository",
    "repository_owner",
    "ref",
    "ref_type",
    "sha",
    "environment",
    "workflow",
    "job_workflow_ref",
    "event_name",
    "run_id",
    "actor",
    "namespace",
    "service_account",
    "pod",
)


def _string(required: bool = True) -> dict[str, Any]:
    return {"type": "String", "required": required}


def _long(required: bool = True) -> dict[str, Any]:
    return {"type": "Long", "required": required}


def _bool() -> dict[str, Any]:
    return {"type": "Boolean", "required": True}


def _strings() -> dict[str, Any]:
    return {"type": "Set", "element": {"type": "String"}, "required": True}


_IDENTITY_ATTRIBUTES: dict[str, Any] = {
    "kind": _string(),
    "owner": _string(),
    "purpose": _string(),
    "justification": _string(),
    "environment": _string(),
    "system": _string(False),
    "region": _string(False),
    "vendor": _string(False),
    "criticality": _string(),
    "status": _string(),
    "has_approval": _bool(),
    # Both shapes of the approval: the record reads well in a policy
    # (`principal.approval.by`), the flat pair is quick to test.
    "approval": {
        "type": "Record",
        "required": False,
        "attributes": {"by": _string(), "expires": _long()},
    },
    "approval_expires": _long(False),
    "expires": _long(False),
}

_PROFILE_ATTRIBUTES: dict[str, Any] = {
    "provider": _string(),
    "audience": _string(False),
    "target": _string(False),
    "max_ttl_seconds": _long(),
    "scopes": _strings(),
}

_CONTEXT_ATTRIBUTES: dict[str, Any] = {
    "attested": _bool(),
    "entitled": _bool(),
    "entitled_scopes": _strings(),
    "issuer": _string(False),
    "claims": {"type": "Claims", "required": True},
    "task": _string(False),
    "task_name": _string(False),
    "requested_ttl_seconds": _long(),
    "scopes": _strings(),
    "intent": _string(False),
    "now": _long(),
    "utc_hour": _long(),
    "utc_weekday": _long(),
    "environment": _string(),
    "source_ip": {"type": "Extension", "name": "ipaddr", "required": False},
    "actor": _string(False),
    "delegation": {"type": "Set", "element": {"type": "String"}, "required": False},
    "delegation_depth": _long(False),
    "run": {
        "type": "Record",
        "required": False,
        "attributes": {
            "purpose": _string(),
            "tools": _strings(),
            "resources": _strings(),
            "data_classes": _strings(),
            "principal": _string(False),
            "principal_type": _string(False),
        },
    },
}

#: The published Cedar schema (JSON form). Identity labels are Cedar entity tags:
#: `principal.hasTag("team") && principal.getTag("team") == "payments"`.
CEDAR_SCHEMA: dict[str, Any] = {
    NAMESPACE: {
        "commonTypes": {
            "Claims": {
                "type": "Record",
                "attributes": {name: _string(False) for name in CLAIM_SELECTORS},
            },
            "Context": {"type": "Record", "attributes": _CONTEXT_ATTRIBUTES},
        },
        "entityTypes": {
            "Identity": {
                "shape": {"type": "Record", "attributes": _IDENTITY_ATTRIBUTES},
                "tags": {"type": "String"},
            },
            "Profile": {"shape": {"type": "Record", "attributes": _PROFILE_ATTRIBUTES}},
        },
        "actions": {
            action: {
                "appliesTo": {
                    "principalTypes": ["Identity"],
                    "resourceTypes": ["Profile"],
                    "context": {"type": "Context"},
                }
            }
            for action in ALL_ACTIONS
        },
    }
}


@functools.cache
def schema_handle() -> Any:
    """The schema parsed once; Cedar reuses the handle for every validation and request."""
    return cedarpy.Schema.from_json_str(json.dumps(CEDAR_SCHEMA))


def schema_text() -> str:
    """The schema in Cedar's human-readable syntax, for people writing policies."""
    return str(schema_handle())
