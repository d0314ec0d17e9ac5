"""Tether's own JWTs: what it signs verifies; what it did not sign is never accepted."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether._internal.timeutil import utcnow
from tether.app import Tether
from tether.config import Settings
from tether.model import Identity, Kind, Lease, LeaseState


@pytest.fixture
def node(tmp_path: Path) -> Tether:
    n = Tether(Settings(home=tmp_path, database_url="memory://", public_url="https://tether.test"))
    n.initialize(1, 1)
    n.signing_keys.ensure_current()
    return n


def _issue(
    node: Tether,
    lease_id: str = "lse_1",
    lifetime: dt.timedelta = dt.timedelta(minutes=5),
    issued_ago: dt.timedelta = dt.timedelta(0),
) -> str:
    issued = utcnow() - issued_ago
    lease = Lease(
        lease_id,
        "svc",
        "team",
        "jwt",
        issued,
        issued + lifetime,
        LeaseState.ACTIVE,
        audience="https://api.example.com",
        scopes=("read",),
    )
    identity = Identity("svc", Kind.WORKLOAD, "team", "p", "j", "prod")
    return node.jwt_provider.issue(lease, identity, None).secret


def _hs256(claims: dict[str, object], kid: str, secret: bytes) -> str:
    """An HMAC-signed token keyed with the public key (PyJWT refuses to make one)."""
    signing_input = f"{_b64({'alg': 'HS256', 'kid': kid})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_tokens_verify_with_the_published_jwks(node: Tether) -> None:
    token = _issue(node)
    (key,) = node.signing_keys.jwks()["keys"]
    assert "d" not in key  # the private part is never published
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["ES256"],
        audience="https://api.example.com",
        issuer="https://tether.test",
    )
    assert claims["jti"] == "lse_1" and claims["scope"] == "read"
    assert node.jwt_provider.decode(token) is not None


def test_forged_tokens_are_refused(node: Tether) -> None:
    token = _issue(node)
    assert node.jwt_provider.decode(token) is not None  # verified once: remembered by hash
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = jwt.get_unverified_header(token)["kid"]
    public_pem = node.signing_keys.verification_key(kid).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = {
        "alg none": f"{_b64({'alg': 'none', 'kid': kid})}.{payload}.",
        "HS256 keyed with the public key": _hs256(claims, kid, public_pem),
        "attacker key, same kid": jwt.encode(
            claims, attacker, algorithm="ES256", headers={"kid": kid}
        ),
        "unknown kid": jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": "nope"}),
        "tampered payload": f"{header}.{_b64({**claims, 'scope': 'admin'})}.{signature}",
        "wrong issuer": jwt.encode(
            {**claims, "iss": "https://evil.test"},
            attacker,
            algorithm="ES256",
            headers={"kid": kid},
        ),
        "truncated": token[:-10],
        "garbage": "not.a.jwt",
    }
    for name, value in forged.items():
        assert node.jwt_provider.decode(value) is None, name
        assert node.issuance.introspect(value) == {"active": False}, name


def test_expired_tokens_are_refused(node: Tether) -> None:
    token = _issue(node, "lse_old", dt.timedelta(minutes=59), issued_ago=dt.timedelta(hours=1))
    assert node.jwt_provider.decode(token) is None


def test_a_token_verified_before_is_refused_once_it_expires(node: Tether) -> None:
    token = _issue(node, "lse_short", dt.timedelta(seconds=1))
    claims = node.jwt_provider.decode(token)
    assert claims is not None
    while time.time() <= claims["exp"]:
        time.sleep(0.05)
    assert node.jwt_provider.decode(token) is None


def test_sealing_forgets_the_private_keys(node: Tether) -> None:
    token = _issue(node)
    assert node.jwt_provider.decode(token) is not None
    node.seal(node.auth.authenticate(_root(node)))
    assert node.signing_keys.jwks() == {"keys": []}
    assert node.jwt_provider.decode(token) is None


def _root(node: Tether) -> str:
    with node.store.transaction() as tx:
        token, _ = node.auth.issue(tx, "t", ["admin"], "test")
    return token
