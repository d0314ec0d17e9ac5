"""Invariant 6: the database file holds no secret, token or key in the clear."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from tests.factories import estate_document
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate


def test_database_file_holds_no_secret_token_or_key(tmp_path: Path) -> None:
    node = Tether(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'tether.db'}"))
    init = node.initialize(shares=5, threshold=3)
    stored_secret = secrets.token_urlsafe(32).encode()
    with node.store.transaction() as tx:
        node.barrier.put_secret(tx, "static/mainframe", "static", stored_secret)
        api_token, _ = node.auth.issue(tx, "ci", ["auditor"], created_by="test")
    node.estate.apply(parse_estate(estate_document(8)), actor="test")
    node.rotate(node.auth.authenticate(init.root_token))
    while node.barrier.rewrap():
        pass
    keyring = node.barrier.keyring()
    keys = [*keyring.terms.values(), keyring.audit_key, keyring.token_key]
    node.stop()

    data = b"".join(p.read_bytes() for p in tmp_path.glob("tether.db*"))
    assert data, "the database file should exist"
    needles = [
        stored_secret,
        init.root_token.encode(),
        api_token.encode(),
        *(s.encode() for s in init.shares),
    ]
    for key in keys:
        needles += [key, base64.b64encode(key), key.hex().encode()]
    for needle in needles:
        assert needle not in data
