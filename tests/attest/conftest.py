from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.attest.oidc_issuer import Clock, OidcIssuer
from tether.attest import Attestor, AttestorLimits, MemoryJtiStore
from tether.model import Issuer

MakeAttestor = Callable[..., Attestor]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def idp(clock: Clock) -> Iterator[OidcIssuer]:
    """A running local OIDC issuer with an RSA, an EC P-256 and an Ed25519 key."""
    with OidcIssuer(clock=clock) as issuer:
        yield issuer


@pytest.fixture
def jti_store(clock: Clock) -> MemoryJtiStore:
    return MemoryJtiStore(clock=clock)


@pytest.fixture
def make_attestor(clock: Clock, jti_store: MemoryJtiStore) -> Iterator[MakeAttestor]:
    """Attestor(issuers, ...) on the test clock and jti store; closed afterwards."""
    made: list[Attestor] = []

    def make(issuers: Issuer | Sequence[Issuer], **kwargs: Any) -> Attestor:
        listed = [issuers] if isinstance(issuers, Issuer) else list(issuers)
        store = kwargs.pop("jti_store", jti_store)
        http = kwargs.pop("http", None)
        at = kwargs.pop("clock", clock)
        limits = AttestorLimits(**kwargs)
        attestor = Attestor(lambda: listed, store, http=http, limits=limits, clock=at)
        made.append(attestor)
        return attestor

    yield make
    for attestor in made:
        attestor.close()
