"""Issuance's domain errors become RFC 6749 errors at the edge, with today's codes and
statuses; an administrative 404 answers like every other 404 of the API."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tether.api._oauth_errors import OAuthError, register
from tether.issuance import (
    AccessDenied,
    AttestationUnavailable,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    IssuanceError,
    NotFound,
    TaskTokenRequired,
    UnknownTarget,
)


def _client(error: Exception) -> TestClient:
    app = FastAPI()
    register(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    return TestClient(app)


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (InvalidRequest("subject_token is required"), "invalid_request", 400),
        (InvalidGrant("the join token is unknown, used or expired"), "invalid_grant", 400),
        (InvalidTarget("no profile serves x"), "invalid_target", 400),
        (UnknownTarget("no target 'db' is registered"), "invalid_target", 404),
        (AccessDenied("denied: identity x is retired"), "access_denied", 403),
        (
            AttestationUnavailable("attestation not checked: HTTP 503"),
            "temporarily_unavailable",
            503,
        ),
        (TaskTokenRequired("a task token is required"), "invalid_token", 401),
        (
            OAuthError("unsupported_grant_type", "grant_type must be x"),
            "unsupported_grant_type",
            400,
        ),
    ],
)
def test_each_refusal_has_its_oauth_code_and_status(
    error: Exception, code: str, status: int
) -> None:
    response = _client(error).get("/boom")
    assert response.status_code == status
    assert response.json() == {"error": code, "error_description": str(error)}
    assert response.headers["cache-control"] == "no-store"
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_an_administrative_lookup_answers_with_the_apis_404_body() -> None:
    response = _client(NotFound("no identity 'x'")).get("/boom")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no identity 'x'"}


def test_every_issuance_error_is_mapped() -> None:
    """A new refusal must say what it is on the wire (the fallback is only a net)."""
    from tether.api import _oauth_errors

    mapped = {kind for kind, _, _ in _oauth_errors._OAUTH} | {NotFound}

    def subclasses(kind: type[IssuanceError]) -> set[type[IssuanceError]]:
        out = set(kind.__subclasses__())
        for sub in list(out):
            out |= subclasses(sub)
        return out

    assert subclasses(IssuanceError) <= mapped
