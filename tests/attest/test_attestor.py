"""Verifying attestation JWTs: what is accepted, and every attack that must be refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import threading
from typing import Any

import pytest

from tests.attest.asserts import refused, split
from tests.attest.conftest import MakeAttestor
from tests.attest.oidc_issuer import (
    DISCOVERY_PATH,
    JWKS_PATH,
    OMIT,
    Clock,
    KeyType,
    OidcIssuer,
    SigningKey,
    b64url,
    b64url_json,
    encode,
    hmac_signer,
)
from tether.attest import (
    Attestor,
    AttestorLimits,
    Evidence,
    MemoryJtiStore,
    ReplayedToken,
)
from tether.model import Issuer

KEY_TYPES: list[KeyType] = ["RSA", "EC", "OKP"]


# -- accepted -------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["jwks_uri", "inline", "discovery"])
@pytest.mark.parametrize("kty", KEY_TYPES)
def test_a_valid_token_is_accepted(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock, keys: str, kty: Any
) -> None:
    attestor = make_attestor(idp.issuer_config(keys=keys))  # type: ignore[arg-type]
    token = idp.mint({"sub": "job-1", "jti": "jti-1"}, key=idp.key(kty))

    evidence = attestor.verify(token)

    assert evidence == Evidence(
        issuer_id="test-idp",
        issuer=idp.url,
        subject="job-1",
        claims=evidence.claims,
        selectors=evidence.selectors,
        issued_at=clock.now,
        expires_at=clock.now + dt.timedelta(minutes=5),
        jti="jti-1",
    )
    assert evidence.claims["aud"] == "tether"
    assert evidence.selectors["sub"] == "job-1"
    expected = {"inline": (0, 0), "jwks_uri": (0, 1), "discovery": (1, 1)}[keys]
    assert (idp.requests_to(DISCOVERY_PATH), idp.requests_to(JWKS_PATH)) == expected


def test_evidence_is_read_only(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    evidence = make_attestor(idp.issuer_config()).verify(idp.mint())
    with pytest.raises(dataclasses.FrozenInstanceError):
        evidence.subject = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        evidence.claims["sub"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        evidence.selectors["sub"] = "other"  # type: ignore[index]


def test_a_single_key_needs_no_kid(clock: Clock, make_attestor: MakeAttestor) -> None:
    with OidcIssuer(["EC"], clock=clock) as idp:
        attestor = make_attestor(idp.issuer_config())
        assert attestor.verify(idp.mint(headers={"kid": OMIT})).subject == "test-subject"


def test_a_token_with_an_audience_list_needs_one_accepted_audience(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(audiences=["tether", "tether-dev"]))
    assert attestor.verify(idp.mint({"aud": ["someone-else", "tether-dev"]}))


def test_time_checks_allow_the_leeway_and_no_more(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), leeway=dt.timedelta(seconds=30))
    now = int(clock.now.timestamp())
    assert attestor.verify(idp.mint({"exp": now - 29}))
    assert attestor.verify(idp.mint({"nbf": now + 29, "iat": now + 29}))
    refused(attestor, idp.mint({"exp": now - 30}), "token expired")
    refused(attestor, idp.mint({"nbf": now + 31}), r"not yet valid \(nbf\)")
    refused(attestor, idp.mint({"iat": now + 31}), r"issued in the future \(iat\)")


def test_nbf_and_iat_are_optional(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    evidence = make_attestor(idp.issuer_config()).verify(idp.mint({"nbf": OMIT, "iat": OMIT}))
    assert evidence.issued_at is None


def test_a_token_that_expires_later_becomes_expired(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config())
    token = idp.mint(lifetime=dt.timedelta(minutes=5))
    assert attestor.verify(token)
    clock.advance(minutes=5, seconds=30)
    refused(attestor, token, "token expired")


def test_lifetimes_up_to_24_hours_are_accepted_and_longer_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config())
    assert attestor.verify(idp.mint(lifetime=dt.timedelta(hours=24)))
    refused(attestor, idp.mint(lifetime=dt.timedelta(hours=24, seconds=1)), "too far in the future")
    refused(attestor, idp.mint({"exp": 10**30}), "too far in the future")
    refused(attestor, idp.mint({"exp": 1e308}), "too far in the future")


def test_a_different_issuer_url_with_the_same_keys_is_not_trusted(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config())
    for iss in (idp.url + "/", idp.url.replace("127.0.0.1", "localhost"), "https://evil.example"):
        refused(attestor, idp.mint({"iss": iss}), "issuer is not trusted")
    refused(attestor, idp.mint({"iss": OMIT}), r"no issuer \(iss\)")
    refused(attestor, idp.mint({"iss": ["x"]}), r"no issuer \(iss\)")


# -- claims that must be present and right ---------------------------------------------


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "someone-else"}, "audience not accepted"),
        ({"aud": ["a", "b"]}, "audience not accepted"),
        ({"aud": "TETHER"}, "audience not accepted"),
        ({"aud": OMIT}, r"no audience \(aud\)"),
        ({"aud": ["tether", 1]}, r"no audience \(aud\)"),
        ({"aud": {"tether": True}}, r"no audience \(aud\)"),
        ({"exp": OMIT}, r"no expiry \(exp\)"),
        ({"exp": "4102444800"}, "exp is not a NumericDate"),
        ({"exp": True}, "exp is not a NumericDate"),
        ({"nbf": "0"}, "nbf is not a NumericDate"),
        ({"iat": [1]}, "iat is not a NumericDate"),
        ({"sub": OMIT}, r"no subject \(sub\)"),
        ({"sub": ""}, r"no subject \(sub\)"),
        ({"sub": 7}, r"no subject \(sub\)"),
        ({"jti": 7}, "jti is not a non-empty string"),
        ({"jti": ""}, "jti is not a non-empty string"),
    ],
)
def test_bad_claims_are_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, claims: dict[str, Any], reason: str
) -> None:
    refused(make_attestor(idp.issuer_config()), idp.mint(claims), reason)


def test_an_iat_out_of_range_is_refused_cleanly(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    refused(make_attestor(idp.issuer_config()), idp.mint({"iat": -(10**20)}), "iat is out of range")


# -- algorithm attacks -----------------------------------------------------------------


def test_alg_none_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    payload = idp.claims()
    for alg in ("none", "None", "NONE", "nOnE"):
        header = {"alg": alg, "typ": "JWT", "kid": idp.key("RSA").kid}
        unsigned = f"{b64url_json(header)}.{b64url_json(payload)}."
        refused(attestor, unsigned, "not signed")
        refused(attestor, unsigned + "AAAA", "algorithm .* not allowed for issuer test-idp")
    # Even an estate that lists `none` cannot turn it on.
    permissive = dataclasses.replace(idp.issuer_config(), algorithms=("none", "RS256"))
    header = {"alg": "none", "kid": idp.key("RSA").kid}
    refused(
        make_attestor(permissive),
        f"{b64url_json(header)}.{b64url_json(payload)}.AAAA",
        "algorithm none not allowed for issuer test-idp",
    )


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_keyed_with_the_public_key_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, alg: str
) -> None:
    rsa = idp.key("RSA")
    # Everything an attacker could feed an HMAC from the published key.
    secrets = [
        rsa.public_pem(),
        rsa.public_pem().strip(),
        json.dumps(rsa.public_jwk()).encode(),
        rsa.public_jwk()["n"].encode(),
    ]
    digest = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}[alg]
    # Even an estate that (against its schema) lists HS* cannot turn them on.
    for config in (
        idp.issuer_config(),
        dataclasses.replace(idp.issuer_config(), algorithms=(alg, "RS256")),
    ):
        attestor = make_attestor(config)
        for secret in secrets:
            for kid in (rsa.kid, OMIT):
                header = {"alg": alg, "typ": "JWT", "kid": kid}
                header = {k: v for k, v in header.items() if v is not OMIT}
                token = encode(header, idp.claims(), hmac_signer(secret, digest))
                refused(attestor, token, f"algorithm {alg} not allowed for issuer test-idp")


def test_an_hmac_secret_published_as_an_oct_key_is_never_used(
    clock: Clock, make_attestor: MakeAttestor
) -> None:
    with OidcIssuer(["RSA"], clock=clock) as idp:
        secret = os.urandom(32)
        oct_jwk = {"kty": "oct", "kid": "shared", "k": b64url(secret), "alg": "HS256"}
        config = Issuer.from_spec(
            {
                "id": "test-idp",
                "issuer": idp.url,
                "audiences": ["tether"],
                "jwks": {"keys": [oct_jwk, idp.key("RSA").public_jwk()]},
                "algorithms": ["HS256", "RS256"],
            }
        )
        attestor = make_attestor(config)
        token = encode({"alg": "HS256", "kid": "shared"}, idp.claims(), hmac_signer(secret))
        refused(attestor, token, "algorithm HS256 not allowed")
        assert attestor.verify(idp.mint())


def test_an_algorithm_outside_the_issuers_allow_list_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(algorithms=["ES256"]))
    assert attestor.verify(idp.mint(key=idp.key("EC")))
    refused(
        attestor, idp.mint(key=idp.key("RSA")), "algorithm RS256 not allowed for issuer test-idp"
    )
    refused(attestor, idp.mint(key=idp.key("OKP")), "algorithm EdDSA not allowed")
    refused(attestor, idp.mint(key=idp.key("RSA"), alg="PS256"), "algorithm PS256 not allowed")
    refused(attestor, idp.mint(headers={"alg": "XY999"}), r"algorithm \(unrecognized\) not allowed")
    refused(attestor, idp.mint(headers={"alg": OMIT}), "no alg")
    refused(attestor, idp.mint(headers={"alg": 256}), "no alg")


@pytest.mark.parametrize(
    ("signer", "alg", "kid_of"),
    [
        ("EC", "ES256", "RSA"),  # an ES256 signature presented under the RSA key's kid
        ("RSA", "RS256", "EC"),
        ("RSA", "RS256", "OKP"),
        ("OKP", "EdDSA", "RSA"),
        ("EC", "ES256", "OKP"),
    ],
)
def test_algorithm_and_key_type_confusion_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, signer: Any, alg: str, kid_of: Any
) -> None:
    attestor = make_attestor(idp.issuer_config())
    token = idp.mint(key=idp.key(signer), alg=alg, headers={"kid": idp.key(kid_of).kid})
    refused(attestor, token, f"algorithm {alg} does not match the key's type")


def test_a_key_that_declares_its_alg_is_used_for_that_alg_only(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    # The published RSA JWK says alg RS256; a PS256 signature by the same key is refused.
    attestor = make_attestor(idp.issuer_config(algorithms=["RS256", "PS256"]))
    refused(attestor, idp.mint(key=idp.key("RSA"), alg="PS256"), "does not match the key's type")


def test_a_key_without_alg_may_be_used_with_any_algorithm_of_its_type(
    clock: Clock, make_attestor: MakeAttestor
) -> None:
    with OidcIssuer(["RSA"], clock=clock) as idp:
        jwk = idp.key("RSA").public_jwk(with_alg=False)
        config = dataclasses.replace(
            idp.issuer_config(algorithms=["RS256", "PS384", "ES256"]),
            jwks_uri=None,
            jwks={"keys": [jwk]},
        )
        attestor = make_attestor(config)
        assert attestor.verify(idp.mint(alg="PS384"))
        assert attestor.verify(idp.mint(alg="RS256"))
        refused(attestor, idp.mint(alg="RS512"), "algorithm RS512 not allowed")
        stranger = idp.add_key("EC", publish=False)
        token = idp.mint(key=stranger, headers={"kid": jwk["kid"]})
        refused(attestor, token, "algorithm ES256 does not match the key's type")


# -- headers that must not steer verification --------------------------------------------


def test_a_crit_header_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    for crit in (["exp"], ["b64"], [], "x"):
        refused(attestor, idp.mint(headers={"crit": crit, "b64": True}), "crit header")


def test_an_embedded_jwk_is_never_used(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    for kty in KEY_TYPES:
        attacker = SigningKey.generate(kty)
        jwk = attacker.public_jwk()
        # Under the attacker's own kid: a kid the issuer does not publish.
        refused(attestor, idp.mint(key=attacker, headers={"jwk": jwk}), "unknown key id")
        # Under the issuer's kid: the signature does not verify with the issuer's key.
        legit = idp.key(kty).kid
        token = idp.mint(key=attacker, headers={"jwk": {**jwk, "kid": legit}, "kid": legit})
        refused(attestor, token, "signature invalid")


@pytest.mark.parametrize("header", ["jku", "x5u"])
def test_a_key_url_in_the_token_is_never_fetched(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock, header: str
) -> None:
    attestor = make_attestor(idp.issuer_config())
    with OidcIssuer(["RSA"], clock=clock) as attacker:
        attacker_key = attacker.key("RSA")
        for kid in (attacker_key.kid, idp.key("RSA").kid):
            token = idp.mint(key=attacker_key, headers={header: attacker.jwks_uri, "kid": kid})
            refused(attestor, token)
        assert sum(attacker.requests.values()) == 0


def test_x5c_is_ignored(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    # A well-signed token is not affected by junk in x5c, and x5c never supplies a key.
    assert attestor.verify(idp.mint(headers={"x5c": ["MIIB"]}))
    refused(attestor, idp.mint(key=SigningKey.generate("RSA"), headers={"x5c": ["MIIB"]}))


# -- tampering and malformed tokens ----------------------------------------------------


def test_a_tampered_payload_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    for kty in KEY_TYPES:
        token = idp.mint({"sub": "repo:acme/app"}, key=idp.key(kty))
        header, payload, signature = split(token)
        payload["sub"] = "repo:acme/payments"
        forged = f"{b64url_json(header)}.{b64url_json(payload)}.{signature}"
        refused(attestor, forged, "signature invalid")


def test_a_tampered_header_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    token = idp.mint(key=idp.key("RSA"))
    header, _, _ = split(token)
    _, payload_b64, signature = token.split(".")
    for changed in (
        {**header, "typ": "at+jwt"},
        {**header, "x": 1},
        {"kid": header["kid"], "alg": "RS256"},
    ):
        forged = f"{b64url_json(changed)}.{payload_b64}.{signature}"
        refused(attestor, forged, "signature invalid")


@pytest.mark.parametrize("kty", KEY_TYPES)
def test_every_flipped_signature_bit_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, kty: Any
) -> None:
    import base64

    attestor = make_attestor(idp.issuer_config())
    token = idp.mint(key=idp.key(kty))
    head, body, sig_b64 = token.split(".")
    signature = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
    for index in range(0, len(signature), 7):
        bad = bytearray(signature)
        bad[index] ^= 0x01
        refused(attestor, f"{head}.{body}.{b64url(bytes(bad))}", "signature invalid")
    refused(attestor, f"{head}.{body}.{b64url(signature[:-1])}", "signature invalid")
    refused(attestor, f"{head}.{body}.{b64url(signature + b'x')}", "signature invalid")


def test_a_truncated_token_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    token = idp.mint()
    head, body, _ = token.split(".")
    cuts = [
        token[:-1],
        token[:-4],
        token[: len(head) + len(body) + 1],  # no signature segment
        f"{head}.{body}.",
        f"{head}.{body}",
        head,
        token[: len(head) // 2],
        token[: len(head) + 5],
    ]
    for cut in cuts:
        refused(attestor, cut)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b.c",
        "..",
        "...",
        "a.b.c.d",
        "ey.ey.ey",
        "Bearer x.y.z",
        " " * 10,
        "\u00e9\u00e9.\u00e9\u00e9.\u00e9\u00e9",
        "x" * 20_000,
        None,
        b"a.b.c",
        12,
    ],
)
def test_garbage_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor, garbage: Any) -> None:
    refused(make_attestor(idp.issuer_config()), garbage)


def test_valid_signatures_over_malformed_json_are_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config())
    key = idp.key("RSA")
    header = b64url_json({"alg": "RS256", "kid": key.kid})
    claims = json.dumps(idp.claims())
    bodies = [
        b"[1, 2]",
        b'"a string"',
        b"\xff\xfe",
        claims.replace("{", '{"sub": "a", ', 1).encode(),  # duplicate member
        claims.replace("{", '{"x": NaN, ', 1).encode(),
        claims.replace("{", '{"x": Infinity, ', 1).encode(),
        b"[" * 5000 + b"]" * 5000,
    ]
    for body in bodies:
        signing_input = f"{header}.{b64url(body)}"
        token = f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"
        refused(attestor, token, "malformed token: payload")


def test_non_canonical_base64_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    token = idp.mint()
    head, body, signature = token.split(".")
    for bad in (
        f"{head}=.{body}.{signature}",
        f"{head}.{body} .{signature}",
        f"{head}.{body}.{signature}==",
        f"{head}.{body.replace('-', '+').replace('_', '/')}x+/.{signature}",
        f"{head}\n.{body}.{signature}",
    ):
        refused(attestor, bad, "malformed token")


# -- kid handling ----------------------------------------------------------------------


def test_kid_is_required_when_the_issuer_has_several_keys(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config())
    refused(
        attestor, idp.mint(headers={"kid": OMIT}), "no kid and issuer test-idp publishes 3 keys"
    )
    refused(attestor, idp.mint(headers={"kid": 5}), "kid is not a string")


def test_an_unknown_kid_is_refused(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config())
    stranger = idp.add_key("RSA", publish=False)
    refused(attestor, idp.mint(key=stranger), "unknown key id for issuer test-idp")


# -- issuers ---------------------------------------------------------------------------


def test_two_estate_issuers_for_one_idp_are_told_apart_by_audience(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    prod = idp.issuer_config("gh-prod", audiences=["tether-prod"])
    dev = idp.issuer_config("gh-dev", audiences=["tether-dev"])
    both = idp.issuer_config("gh-both", audiences=["tether-prod", "tether-dev"])
    attestor = make_attestor([prod, dev])
    assert attestor.verify(idp.mint({"aud": "tether-prod"})).issuer_id == "gh-prod"
    assert attestor.verify(idp.mint({"aud": "tether-dev"})).issuer_id == "gh-dev"
    refused(attestor, idp.mint({"aud": "tether"}), "audience not accepted")
    overlapping = make_attestor([prod, both])
    refused(
        overlapping,
        idp.mint({"aud": "tether-prod"}),
        "more than one trusted issuer: gh-both, gh-prod",
    )


def test_a_token_signed_by_another_trusted_issuer_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    with OidcIssuer(["RSA"], clock=clock) as other:
        attestor = make_attestor([idp.issuer_config("a"), other.issuer_config("b")])
        # b's key, a's iss: keys are looked up only in a's JWKS.
        token = other.mint({"iss": idp.url})
        refused(attestor, token, "unknown key id for issuer a")
        token = other.mint({"iss": idp.url}, headers={"kid": idp.key("RSA").kid})
        refused(attestor, token, "signature invalid")
        assert attestor.verify(other.mint()).issuer_id == "b"


def test_an_issuer_with_an_unknown_preset_is_not_trusted(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    config = dataclasses.replace(idp.issuer_config(), preset="saml")
    refused(make_attestor(config), idp.mint(), "issuer is not trusted")


# -- single use ------------------------------------------------------------------------


def test_a_single_use_issuer_refuses_a_replayed_jti(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(single_use=True))
    token = idp.mint()
    assert attestor.verify(token)
    error = refused(attestor, token, "already used", ReplayedToken)
    assert error.code == "replayed_token"
    # A different token with the same jti is the same replay.
    _, payload, _ = split(token)
    refused(attestor, idp.mint({"jti": payload["jti"]}, key=idp.key("EC")), kind=ReplayedToken)


def test_a_single_use_issuer_refuses_a_token_without_jti(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(single_use=True))
    refused(attestor, idp.mint({"jti": OMIT}), "no jti, which single-use issuer test-idp needs")


def test_github_actions_issuers_are_single_use_by_default(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(preset="github-actions"))
    token = idp.github_actions_token()
    assert attestor.verify(token).selectors["repository"] == "acme/payments"
    refused(attestor, token, kind=ReplayedToken)


def test_a_refused_token_does_not_use_up_its_jti(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(single_use=True))
    refused(attestor, idp.mint({"jti": "j-1", "aud": "other"}))
    refused(attestor, idp.mint({"jti": "j-1"}, key=idp.add_key("RSA", publish=False)))
    assert attestor.verify(idp.mint({"jti": "j-1"})).jti == "j-1"


def test_jti_is_remembered_per_issuer_until_the_token_can_no_longer_be_used(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    seen: list[tuple[str, str, dt.datetime]] = []

    class Recording:
        def remember(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
            seen.append((issuer, jti, expires_at))
            return True

    attestor = make_attestor(idp.issuer_config(single_use=True), jti_store=Recording())
    attestor.verify(idp.mint({"jti": "j-9"}, lifetime=dt.timedelta(minutes=10)))
    assert seen == [(idp.url, "j-9", clock.now + dt.timedelta(minutes=10, seconds=30))]


def test_a_reusable_issuer_accepts_the_same_token_twice(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(single_use=False))
    token = idp.mint({"jti": OMIT})
    assert attestor.verify(token).jti is None
    assert attestor.verify(token)


def test_concurrent_replays_let_exactly_one_through(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(single_use=True))
    token = idp.mint()
    attestor.verify(idp.mint())  # warm the key cache so the race is on the jti alone
    results: list[str] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        try:
            attestor.verify(token)
            results.append("ok")
        except ReplayedToken:
            results.append("replayed")

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok"] + ["replayed"] * 15


# -- presets end to end ----------------------------------------------------------------


def test_a_kubernetes_token_yields_its_service_account(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(preset="kubernetes"))
    evidence = attestor.verify(idp.kubernetes_token(namespace="payments", service_account="api"))
    assert evidence.subject == "system:serviceaccount:payments:api"
    assert evidence.jti is None
    assert evidence.selectors["namespace"] == "payments"
    assert evidence.selectors["service_account"] == "api"
    assert evidence.selectors["pod"].startswith("deployer-")


def test_a_kubernetes_token_whose_claims_disagree_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(preset="kubernetes"))
    claims = idp.kubernetes_claims(namespace="payments")
    claims["sub"] = "system:serviceaccount:kube-system:deployer"
    refused(attestor, idp.mint(claims), "disagrees with the subject")


# -- concurrency and caching -----------------------------------------------------------


def test_concurrent_first_use_fetches_the_jwks_once(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config(keys="discovery"))
    tokens = [idp.mint(key=idp.key(KEY_TYPES[i % 3])) for i in range(48)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(16)

    def work(chunk: list[str]) -> None:
        barrier.wait()
        for token in chunk:
            try:
                attestor.verify(token)
            except BaseException as exc:  # collected and asserted below
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(tokens[i::16],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert (idp.requests_to(DISCOVERY_PATH), idp.requests_to(JWKS_PATH)) == (1, 1)


def test_issuers_are_read_once_until_invalidated(
    idp: OidcIssuer, clock: Clock, jti_store: MemoryJtiStore
) -> None:
    calls: list[int] = []
    issuers = [idp.issuer_config()]

    def load() -> list[Issuer]:
        calls.append(1)
        return list(issuers)

    attestor = Attestor(load, jti_store, clock=clock)
    try:
        for _ in range(5):
            attestor.verify(idp.mint())
        assert (len(calls), idp.requests_to(JWKS_PATH)) == (1, 1)
        attestor.invalidate()
        attestor.verify(idp.mint())
        assert (len(calls), idp.requests_to(JWKS_PATH)) == (2, 2)
        issuers.clear()
        assert attestor.verify(idp.mint())  # still the old list: nobody said it changed
        attestor.invalidate()
        refused(attestor, idp.mint(), "issuer is not trusted")
    finally:
        attestor.close()


def test_the_default_http_client_works(idp: OidcIssuer, clock: Clock) -> None:
    attestor = Attestor(
        lambda: [idp.issuer_config(keys="discovery")], MemoryJtiStore(), clock=clock
    )
    try:
        assert attestor.verify(idp.mint()).issuer == idp.url
    finally:
        attestor.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"leeway": dt.timedelta(seconds=-1)},
        {"min_refresh_interval": dt.timedelta(seconds=-1)},
        {"max_expires_in": dt.timedelta(0)},
        {"jwks_max_age": dt.timedelta(0)},
        {"http_timeout": 0},
    ],
)
def test_nonsensical_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"negative|positive"):
        AttestorLimits(**kwargs)
