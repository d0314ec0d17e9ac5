"""Verified evidence and the selectors registration rules are matched against."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.attest.errors import AttestationError

PRESETS = ("github-actions", "kubernetes", "oidc")

#: The GitHub Actions claims registration rules are usually written against.
GITHUB_ACTIONS_SELECTORS = (
    "repository",
    "repository_owner",
    "ref",
    "ref_type",
    "environment",
    "workflow",
    "workflow_ref",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "sha",
    "actor",
    "event_name",
)

_K8S_SUBJECT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a verified attestation token proves about the workload that presented it."""

    issuer_id: str
    issuer: str
    subject: str
    claims: Mapping[str, Any]
    #: Every value is a str: the preset's normalized selectors over the top-level claims.
    selectors: Mapping[str, str]
    issued_at: dt.datetime | None
    expires_at: dt.datetime
    jti: str | None


def selector_value(value: Any) -> str | None:
    """A scalar claim or rule value as the string selectors compare; None if not scalar.

    Booleans are written as in JSON (`true`), so a claim `true` matches a rule value
    `true` whether the estate wrote it as a YAML boolean or as the string "true".
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _scalars(claims: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in claims.items():
        text = selector_value(value)
        if text is not None:
            out[name] = text
    return out


def _github_actions(claims: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in GITHUB_ACTIONS_SELECTORS:
        text = selector_value(claims.get(name))
        if text is not None:
            out[name] = text
    return out


def _name(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if isinstance(value, Mapping):
        value = value.get("name")
    return value if isinstance(value, str) else None


def _uid(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    uid = value.get("uid") if isinstance(value, Mapping) else None
    return uid if isinstance(uid, str) else None


def _kubernetes(claims: Mapping[str, Any]) -> dict[str, str]:
    subject = claims.get("sub")
    # A projected service-account token's sub is system:serviceaccount:<ns>:<sa>; other
    # subjects (nodes, users) are not workloads we attest.
    if not isinstance(subject, str) or not subject.startswith(_K8S_SUBJECT_PREFIX):
        raise AttestationError("subject is not a Kubernetes service account")
    namespace, _, service_account = subject.removeprefix(_K8S_SUBJECT_PREFIX).partition(":")
    if not namespace or not service_account or ":" in service_account:
        raise AttestationError("subject is not a Kubernetes service account")
    k8s = claims.get("kubernetes.io")
    out = {"namespace": namespace, "service_account": service_account}
    if k8s is not None:
        if not isinstance(k8s, Mapping):
            raise AttestationError("kubernetes.io claim is not an object")
        # Both come from the same signed token, so a disagreement means a token that
        # Kubernetes did not mint the normal way: refuse rather than pick one.
        if k8s.get("namespace") != namespace or _name(k8s, "serviceaccount") != service_account:
            raise AttestationError("kubernetes.io claim disagrees with the subject")
        for selector, value in (
            ("service_account_uid", _uid(k8s, "serviceaccount")),
            ("pod", _name(k8s, "pod")),
            ("pod_uid", _uid(k8s, "pod")),
            ("node", _name(k8s, "node")),
        ):
            if value is not None:
                out[selector] = value
    return out


_PRESET_SELECTORS: Mapping[str, Callable[[Mapping[str, Any]], dict[str, str]]] = {
    "github-actions": _github_actions,
    "kubernetes": _kubernetes,
    "oidc": lambda claims: {},
}


def selectors_for(preset: str, claims: Mapping[str, Any]) -> dict[str, str]:
    """Top-level scalar claims, overlaid by the preset's normalized selectors."""
    return {**_scalars(claims), **_PRESET_SELECTORS[preset](claims)}
