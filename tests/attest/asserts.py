"""Assertions shared by the attestation tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tether.attest import AttestationError, Attestor


def refused(
    attestor: Attestor,
    token: Any,
    match: str | None = None,
    kind: type[Exception] = AttestationError,
) -> AttestationError:
    """Assert `token` is refused, and that the reason quotes no part of the token."""
    with pytest.raises(kind, match=match) as info:
        attestor.verify(token)
    error = info.value
    assert isinstance(error, AttestationError)
    assert error.status_code in (401, 503)
    if isinstance(token, str):
        for part in token.split("."):
            if len(part) >= 8:
                assert part not in str(error)
    return error


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    def dec(segment: str) -> dict[str, Any]:
        return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))

    header, payload, signature = token.split(".")
    return dec(header), dec(payload), signature
