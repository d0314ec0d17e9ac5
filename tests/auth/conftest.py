"""The token key and the authenticator every auth test reads tokens with."""

from __future__ import annotations

import os

import pytest

from tether.auth import Authenticator
from tether.store import Store


@pytest.fixture
def token_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def auth(store: Store, token_key: bytes) -> Authenticator:
    return Authenticator(store, lambda: token_key)
