"""Selectors: every value a str, normalized by the issuer's preset."""

from __future__ import annotations

from typing import Any

import pytest

from tests.attest.oidc_issuer import Clock, OidcIssuer
from tether.attest import GITHUB_ACTIONS_SELECTORS, AttestationError, selector_value
from tether.attest._evidence import selectors_for


@pytest.fixture(scope="module")
def shapes() -> OidcIssuer:
    """Only for its claim shapes: never started."""
    return OidcIssuer([], clock=Clock(), start=False)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("x", "x"),
        ("", ""),
        (7, "7"),
        (-1, "-1"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_selector_value(value: Any, text: str | None) -> None:
    assert selector_value(value) == text


def test_top_level_scalars_become_selectors_and_nested_values_do_not() -> None:
    claims = {
        "sub": "s",
        "n": 3,
        "ok": True,
        "aud": ["a", "b"],
        "nested": {"x": "y"},
        "none": None,
    }
    assert selectors_for("oidc", claims) == {"sub": "s", "n": "3", "ok": "true"}


def test_github_actions_selectors(shapes: OidcIssuer) -> None:
    claims = shapes.github_actions_claims(repository="acme/payments", environment="prod")
    claims["run_attempt"] = 2  # a number where GitHub sends a string: still a str selector
    selectors = selectors_for("github-actions", claims)
    for name in GITHUB_ACTIONS_SELECTORS:
        assert isinstance(selectors[name], str), name
    assert selectors["repository"] == "acme/payments"
    assert selectors["repository_owner"] == "acme"
    assert selectors["ref"] == "refs/heads/main"
    assert selectors["environment"] == "prod"
    assert selectors["run_attempt"] == "2"
    assert (
        selectors["job_workflow_ref"]
        == "acme/payments/.github/workflows/deploy.yml@refs/heads/main"
    )
    # Claims outside the preset's list are still there, as top-level scalars.
    assert selectors["repository_id"] == "74000001"
    assert all(isinstance(v, str) for v in selectors.values())


def test_a_github_token_without_environment_has_no_environment_selector(
    shapes: OidcIssuer,
) -> None:
    claims = shapes.github_actions_claims()
    del claims["environment"]
    assert "environment" not in selectors_for("github-actions", claims)


def test_kubernetes_selectors(shapes: OidcIssuer) -> None:
    claims = shapes.kubernetes_claims(namespace="payments", service_account="api", pod="api-1")
    selectors = selectors_for("kubernetes", claims)
    k8s = claims["kubernetes.io"]
    assert selectors["namespace"] == "payments"
    assert selectors["service_account"] == "api"
    assert selectors["pod"] == "api-1"
    assert selectors["pod_uid"] == k8s["pod"]["uid"]
    assert selectors["service_account_uid"] == k8s["serviceaccount"]["uid"]
    assert selectors["node"] == "node-a"
    assert selectors["sub"] == "system:serviceaccount:payments:api"
    assert "kubernetes.io" not in selectors


def test_kubernetes_selectors_come_from_sub_alone_on_older_clusters(shapes: OidcIssuer) -> None:
    claims = shapes.kubernetes_claims(namespace="ops", service_account="bot")
    del claims["kubernetes.io"]
    selectors = selectors_for("kubernetes", claims)
    assert (selectors["namespace"], selectors["service_account"]) == ("ops", "bot")
    assert "pod" not in selectors


def test_preset_selectors_win_over_top_level_claims(shapes: OidcIssuer) -> None:
    claims = shapes.kubernetes_claims(namespace="payments")
    claims["namespace"] = "kube-system"  # a top-level claim cannot pose as the namespace
    assert selectors_for("kubernetes", claims)["namespace"] == "payments"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sub": "system:node:node-a"}, "not a Kubernetes service account"),
        ({"sub": "system:serviceaccount:payments"}, "not a Kubernetes service account"),
        ({"sub": "system:serviceaccount::api"}, "not a Kubernetes service account"),
        ({"sub": "system:serviceaccount:a:b:c"}, "not a Kubernetes service account"),
        ({"sub": 5}, "not a Kubernetes service account"),
        ({"sub": "system:serviceaccount:other:deployer"}, "disagrees with the subject"),
        ({"sub": "system:serviceaccount:payments:other"}, "disagrees with the subject"),
        ({"kubernetes.io": "payments"}, "not an object"),
        ({"kubernetes.io": {"namespace": "payments"}}, "disagrees with the subject"),
    ],
)
def test_kubernetes_tokens_that_are_not_service_accounts_are_refused(
    shapes: OidcIssuer, changes: dict[str, Any], reason: str
) -> None:
    claims = {
        **shapes.kubernetes_claims(namespace="payments", service_account="deployer"),
        **changes,
    }
    with pytest.raises(AttestationError, match=reason):
        selectors_for("kubernetes", claims)
