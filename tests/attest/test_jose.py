"""Compact JWS parsing and JWK loading: strict on input, only public signature keys out."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.attest.oidc_issuer import SigningKey, b64url, b64url_json
from tether.attest import AttestationError
from tether.attest._jose import (
    MAX_TOKEN_LENGTH,
    KeySet,
    loads_object,
    parse_compact,
    parse_jwk,
    parse_jwks,
)

NOW = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.generate("RSA", kid="r1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.generate("EC", kid="e1")


def test_parse_compact_splits_and_decodes() -> None:
    token = f"{b64url_json({'alg': 'RS256'})}.{b64url_json({'sub': 'x'})}.{b64url(b'sig')}"
    compact = parse_compact(token)
    assert compact.header == {"alg": "RS256"}
    assert compact.payload == {"sub": "x"}
    assert compact.signature == b"sig"
    assert compact.signing_input == token.rsplit(".", 1)[0].encode()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "no token"),
        ("a.b", "three dot-separated parts"),
        ("a.b.c.d.e", "three dot-separated parts"),
        ("x" * (MAX_TOKEN_LENGTH + 1), "too large"),
        (f"{b64url_json({})}.{b64url_json({})}.", "not signed"),
        (f"{b64url_json({})}=.{b64url_json({})}.AA", "header is not base64url"),
        (f"{b64url_json({})}.{b64url_json({})}.A", "signature is not base64url"),
        (f"{b64url_json({})}.{b64url_json({})}.A+/A", "signature is not base64url"),
        (f"{b64url(b'[]')}.{b64url_json({})}.AA", "header is not a JSON object"),
        (f"{b64url_json({})}.{b64url(b'null')}.AA", "payload is not a JSON object"),
        (f"{b64url_json({})}.{b64url(b'{}garbage')}.AA", "payload is not a JSON object"),
    ],
)
def test_parse_compact_refuses(token: str, reason: str) -> None:
    with pytest.raises(AttestationError, match=reason):
        parse_compact(token)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": {"b": 1, "b": 1}}',
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b"\xef\xbb\xbf{}",  # a BOM is not JSON text here
        b'{"a": "\xff"}',
        b"1",
        b"[" * 100_000,
    ],
)
def test_loads_object_is_strict(raw: bytes) -> None:
    with pytest.raises(ValueError):
        loads_object(raw)


def test_a_public_jwk_yields_a_public_key(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    parsed = parse_jwk(rsa_key.public_jwk(with_alg=False))
    assert parsed is not None
    assert parsed.kid == "r1"
    assert parsed.algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert isinstance(parsed.key, rsa.RSAPublicKey)
    parsed = parse_jwk(ec_key.public_jwk())
    assert parsed is not None
    assert parsed.algorithms == {"ES256"}
    assert isinstance(parsed.key, ec.EllipticCurvePublicKey)


def test_private_members_in_a_jwks_never_make_a_private_key(rsa_key: SigningKey) -> None:
    from jwt.algorithms import RSAAlgorithm

    private_jwk = dict(RSAAlgorithm.to_jwk(rsa_key.private, as_dict=True))
    private_jwk.pop("key_ops")
    parsed = parse_jwk({**private_jwk, "kid": "r1"})
    assert parsed is not None
    assert isinstance(parsed.key, rsa.RSAPublicKey)
    assert not isinstance(parsed.key, rsa.RSAPrivateKey)


def _with(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**jwk, **changes}


def test_unusable_entries_are_skipped(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    good_rsa = rsa_key.public_jwk()
    good_ec = ec_key.public_jwk()
    x = good_ec["x"]
    small = SigningKey("small", "RSA", rsa.generate_private_key(65537, 1024)).public_jwk()
    unusable: list[Any] = [
        {"kty": "oct", "k": b64url(os.urandom(32)), "alg": "HS256"},
        _with(good_rsa, use="enc"),
        _with(good_rsa, key_ops=["encrypt"]),
        _with(good_rsa, key_ops="verify"),
        _with(good_rsa, alg="HS256"),
        _with(good_rsa, alg="ES256"),
        _with(good_rsa, alg="RSA-OAEP"),
        _with(good_rsa, alg=["RS256"]),
        _with(good_ec, alg="ES384"),
        _with(good_ec, crv="P-384"),
        _with(good_ec, y=x),  # not a point on the curve
        _with(good_ec, x=5),
        _with(good_rsa, n="!!!"),
        _with(good_rsa, kid=7),
        {k: v for k, v in good_rsa.items() if k != "n"},
        {"kty": "EC", "crv": "secp256k1", "x": x, "y": x},
        {"kty": "OKP", "crv": "X25519", "x": x},
        {"kty": "XYZ"},
        small,
        "not an object",
        None,
    ]
    keyset = parse_jwks({"keys": [*unusable, good_rsa, good_ec]}, NOW)
    assert [k.kid for k in keyset.keys] == ["r1", "e1"]
    assert keyset.skipped == len(unusable)


def test_key_ops_with_verify_is_fine(rsa_key: SigningKey) -> None:
    assert parse_jwk(_with(rsa_key.public_jwk(), key_ops=["verify"])) is not None


def test_keyset_candidates_by_kid(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    keyset = parse_jwks({"keys": [rsa_key.public_jwk(), ec_key.public_jwk()]}, NOW)
    rsa_candidates = keyset.candidates("r1")
    assert rsa_candidates is not None
    assert [k.kid for k in rsa_candidates] == ["r1"]
    assert keyset.candidates("zz") is None
    all_keys = keyset.candidates(None)
    assert all_keys is not None
    assert len(all_keys) == 2
    assert KeySet(keys=(), fetched_at=NOW).candidates(None) is None


@pytest.mark.parametrize("document", [None, [], {"keys": None}, {"keys": {"a": 1}}])
def test_parse_jwks_refuses_what_is_not_a_jwks(document: Any) -> None:
    with pytest.raises(ValueError, match="not a JWKS"):
        parse_jwks(document, NOW)


def test_a_key_refuses_an_algorithm_it_was_not_parsed_for(rsa_key: SigningKey) -> None:
    parsed = parse_jwk(rsa_key.public_jwk())
    assert parsed is not None
    signature = rsa_key.sign(b"m", "RS256")
    assert parsed.verify("RS256", b"m", signature)
    assert not parsed.verify("RS512", b"m", rsa_key.sign(b"m", "RS512"))
    assert not parsed.verify("HS256", b"m", signature)
